"""Vouchers pay their share of a finalized invoice; the ledger's voucher receivable agrees with the issuer's report."""

import uuid
from datetime import datetime
from decimal import Decimal

import pytest

from billing.models import Invoice
from billing.periods import month_of
from billing.services.invoices import invoice_finalize, invoice_void, invoices_finalize
from billing.services.ledger import Purpose, balance_of
from billing.services.reconcile import reconcile
from core.money import share, split
from core.timezones import local_zone
from tests.billing.factories import leased, usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.vouchers.factories import program_factory, voucher_factory
from vouchers.models import Voucher
from vouchers.selectors import program_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def voucher(buyer, issuer) -> Voucher:  # type: ignore[no-untyped-def]
    program = program_factory(issuer, coverage_share="0.2", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    return voucher_factory(program, buyer, face_value=10_000_000)


def test_a_finalized_invoice_is_paid_partly_by_the_buyers_voucher(buyer, provider, issuer, voucher) -> None:
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    for day in range(1, 11):
        usage(lease, shanghai(day, 12), seconds=8 * 3600)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    lines = list(invoice.lines.all())
    assert invoice.voucher_credit == sum(share(line.amount, voucher.program.coverage_share)[0] for line in lines) > 0
    assert invoice.amount_due == invoice.subtotal - invoice.voucher_credit
    assert sum(line.voucher_amount for line in lines) == invoice.voucher_credit
    voucher.refresh_from_db()
    assert voucher.remaining == 10_000_000 - invoice.voucher_credit
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == invoice.amount_due
    assert reconcile() == []


def test_the_issuers_report_equals_the_ledgers_voucher_receivable(buyer, provider, issuer, voucher) -> None:
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    report = program_report(program=voucher.program)

    assert report["redeemed"] == balance_of(purpose=Purpose.VOUCHER_RECEIVABLE, organization=issuer) > 0


def test_voiding_gives_the_voucher_back_and_clears_the_issuers_receivable(buyer, provider, issuer, voucher) -> None:
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5)

    voucher.refresh_from_db()
    assert voucher.remaining == 10_000_000
    assert balance_of(purpose=Purpose.VOUCHER_RECEIVABLE, organization=issuer) == 0
    assert program_report(program=voucher.program)["redeemed"] == 0
    assert reconcile() == []


def test_finalized_together_the_older_invoice_is_paid_by_the_voucher_first(buyer, provider, issuer) -> None:
    # Found by the money state machine: a batch applied credits in the order of the invoices' ids,
    # so which month a voucher paid first was chance. The newer invoice gets the smaller id here.
    program = program_factory(issuer, coverage_share="0.2", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    voucher = voucher_factory(program, buyer, face_value=100, now=shanghai(1, 0))
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    march, april = month_of(shanghai(15, 12)), month_of(shanghai(15, 12, month=4))
    Invoice.objects.create(id=uuid.UUID(int=2**128 - 1), buyer=buyer, period_start=march[0], period_end=march[1])
    Invoice.objects.create(id=uuid.UUID(int=1), buyer=buyer, period_start=april[0], period_end=april[1])
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    usage(lease, shanghai(3, 12, month=4), seconds=8 * 3600)

    invoices_finalize(invoice_ids=[uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)], now=shanghai(5, 12, month=5))

    credits = dict(Invoice.objects.values_list("period_start", "voucher_credit"))
    assert credits == {march[0]: 100, april[0]: 0}
    assert Voucher.objects.get(pk=voucher.pk).remaining == 0
    assert reconcile() == []


def test_a_voucher_issued_mid_month_pays_its_whole_share_of_usage_that_all_came_after_it(
    buyer, provider, issuer
) -> None:
    # given a 30% voucher issued on 7 March (the quote promised 30%) and usage only after the 7th
    program = program_factory(issuer, coverage_share="0.3", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    voucher_factory(program, buyer, face_value=10_000_000, now=shanghai(7, 0))
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    for day in range(8, 21):
        for hour in (3, 9, 12, 20):
            usage(lease, shanghai(day, hour), seconds=8 * 3600)

    # when the March invoice is finalized
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    # then the voucher paid 30% of every line, not 30% of the 25 days of 31 it was valid
    lines = list(invoice.lines.all())
    assert len(lines) > 1
    assert [line.voucher_amount for line in lines] == [share(line.amount, Decimal("0.3"))[0] for line in lines]
    assert invoice.voucher_credit == sum(line.voucher_amount for line in lines)
    assert reconcile() == []


def test_a_voucher_issued_mid_month_pays_its_share_of_the_usage_inside_its_validity_only(
    buyer, provider, issuer
) -> None:
    # given one line of usage in the same local hour before the voucher was issued (3 card-hours)
    # and after (5 card-hours)
    program = program_factory(issuer, coverage_share="0.3", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    voucher_factory(program, buyer, face_value=10_000_000, now=shanghai(7, 0))
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(3, 12), seconds=3 * 3600)
    usage(lease, shanghai(10, 12), seconds=5 * 3600)

    # when the March invoice is finalized
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    # then the voucher paid 30% of the part of the line used inside its validity
    (line,) = invoice.lines.all()
    _before, inside = split(line.amount, [3, 5])
    assert line.voucher_amount == share(inside, Decimal("0.3"))[0]
    assert invoice.voucher_credit == line.voucher_amount
    assert reconcile() == []
