"""Month-end finalizes invoices in batches: the same books as one at a time."""

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

import pytest
import time_machine
from django.db import transaction

from billing.models import Invoice, JournalEntry, Leg, ProviderStatement, UsageRollup
from billing.services.invoices import invoice_finalize, invoice_for_period, invoices_finalize
from billing.services.reconcile import reconcile
from tests.billing.factories import leased, usage
from tests.factories import BuyerFactory, ProviderFactory
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db

SETUP = datetime(2026, 2, 20, tzinfo=UTC)
APRIL_5 = datetime(2026, 4, 5, tzinfo=UTC)
MAY_6 = datetime(2026, 5, 6, tzinfo=UTC)


def march(day: int, hour: int = 4) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def buyers_with_march_usage(count: int, provider) -> list[Invoice]:  # type: ignore[no-untyped-def]
    invoices = []
    for n in range(count):
        buyer = BuyerFactory()
        lease = leased(buyer=buyer, provider=provider, at=SETUP)
        for day in range(1, 3 + n):
            usage(lease, march(day), seconds=1800 * (n + 1))
        invoices.append(invoice_for_period(buyer=buyer, at=march(15)))
    return invoices


def books(invoices: list[Invoice]) -> list[tuple]:  # type: ignore[type-arg]
    """What finalizing wrote for each of these invoices, without ids and numbers."""
    result = []
    for invoice in invoices:
        invoice.refresh_from_db()
        lines = sorted((line.kind, line.band, line.quantity, line.rate, line.amount) for line in invoice.lines.all())
        legs = sorted(
            (leg.account.purpose, leg.amount)
            for leg in Leg.objects.filter(entry__reference=invoice.reference).select_related("account")
        )
        result.append((invoice.status, invoice.subtotal, invoice.amount_due, lines, legs))
    return result


def test_a_batch_writes_the_same_books_as_finalizing_one_invoice_at_a_time() -> None:
    provider = ProviderFactory()
    one_by_one = buyers_with_march_usage(4, provider)
    batched = buyers_with_march_usage(4, provider)

    for invoice in one_by_one:
        invoice_finalize(invoice_id=invoice.pk, now=APRIL_5)
    finalized = invoices_finalize(invoice_ids=[invoice.pk for invoice in batched], now=APRIL_5)

    assert finalized == 4
    assert books(batched) == books(one_by_one)
    assert len({invoice.subtotal for invoice in batched}) == 4
    (statement,) = ProviderStatement.objects.all()
    assert statement.gross == 2 * sum(invoice.subtotal for invoice in one_by_one)
    assert sorted(Invoice.objects.values_list("number", flat=True)) == [f"CG-2026-{n:06d}" for n in range(1, 9)]
    assert reconcile() == []


def test_a_batch_skips_invoices_that_are_not_due_and_finalizes_the_rest(provider) -> None:
    open_period, due, already = buyers_with_march_usage(3, provider)
    invoice_finalize(invoice_id=already.pk, now=APRIL_5)
    april = invoice_for_period(buyer=open_period.buyer, at=datetime(2026, 4, 20, tzinfo=UTC))

    finalized = invoices_finalize(invoice_ids=[april.pk, due.pk, already.pk], now=APRIL_5)

    assert finalized == 1
    assert Invoice.objects.get(pk=april.pk).status == "draft"
    assert Invoice.objects.get(pk=due.pk).status == "finalized"
    assert JournalEntry.objects.filter(reference=already.reference).count() == 1


def test_two_due_months_of_one_buyer_in_one_batch_bill_each_hour_once_on_its_own_month(provider) -> None:
    buyer = BuyerFactory()
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, march(3), seconds=3600)
    usage(lease, datetime(2026, 4, 3, 4, tzinfo=UTC), seconds=7200)
    march_invoice = invoice_for_period(buyer=buyer, at=march(15))
    april_invoice = invoice_for_period(buyer=buyer, at=datetime(2026, 4, 15, tzinfo=UTC))

    invoices_finalize(invoice_ids=[april_invoice.pk, march_invoice.pk], now=MAY_6)

    assert [line.quantity for line in Invoice.objects.get(pk=march_invoice.pk).lines.all()] == [1]
    assert [line.quantity for line in Invoice.objects.get(pk=april_invoice.pk).lines.all()] == [2]
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_overlapping_batches_run_concurrently_finalize_each_invoice_once() -> None:
    invoices = buyers_with_march_usage(6, ProviderFactory())
    ids = [invoice.pk for invoice in invoices]
    batches = [ids, ids[::-1], ids[:3], ids[3:], ids[1:5]]

    run_concurrently([partial(invoices_finalize, invoice_ids=batch, now=APRIL_5) for batch in batches])

    assert sorted(Invoice.objects.values_list("number", flat=True)) == [f"CG-2026-{n:06d}" for n in range(1, 7)]
    for invoice in Invoice.objects.all():
        assert JournalEntry.objects.filter(reference=invoice.reference).count() == 1
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_usage_rolled_up_while_its_month_is_being_finalized_waits_and_is_billed_later_as_late_usage() -> None:
    (invoice,) = buyers_with_march_usage(1, ProviderFactory())
    lease = invoice.buyer.leases.get()
    finalizing = threading.Event()

    def finalize_slowly() -> None:
        with transaction.atomic():
            invoices_finalize(invoice_ids=[invoice.pk], now=APRIL_5)
            finalizing.set()
            time.sleep(1)  # the rollup below must wait for this commit

    def roll_up_more() -> None:
        finalizing.wait()
        with time_machine.travel(APRIL_5, tick=False):
            usage(lease, march(1), seconds=9000)  # 1800 s were billed for that hour

    run_concurrently([finalize_slowly, roll_up_more])

    march_lines = list(Invoice.objects.get(pk=invoice.pk).lines.values_list("quantity", flat=True))
    late = UsageRollup.objects.get(late=True)
    assert sum(march_lines) == 1  # two hours of 1800 s, as they stood
    assert (late.hour, late.quantity) == (march(1), 7200)
    april = Invoice.objects.get(buyer=invoice.buyer, status="draft")
    invoice_finalize(invoice_id=april.pk, now=MAY_6)
    assert [(line.kind, line.quantity) for line in april.lines.all()] == [("adjustment", 2)]
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_a_month_being_finalized_waits_for_a_rollup_of_that_month_and_bills_it() -> None:
    (invoice,) = buyers_with_march_usage(1, ProviderFactory())
    lease = invoice.buyer.leases.get()
    rolling_up = threading.Event()

    def roll_up_slowly() -> None:
        with transaction.atomic():
            usage(lease, march(1), seconds=9000)
            rolling_up.set()
            time.sleep(1)  # finalizing must wait for this commit

    def finalize() -> None:
        rolling_up.wait()
        invoices_finalize(invoice_ids=[invoice.pk], now=APRIL_5)

    run_concurrently([roll_up_slowly, finalize])

    lines = Invoice.objects.get(pk=invoice.pk).lines.values_list("quantity", flat=True)
    assert sum(lines) == Decimal("3")  # 9000 s and 1800 s
    assert not UsageRollup.objects.filter(late=True).exists()
    assert reconcile() == []


def test_an_invoice_whose_lines_sum_below_zero_stays_a_draft_and_the_rest_of_its_batch_is_finalized(provider) -> None:
    (march_invoice,) = buyers_with_march_usage(1, provider)  # two hours of 1800 s, finalized below
    invoice_finalize(invoice_id=march_invoice.pk, now=APRIL_5)
    lease = march_invoice.buyer.leases.get()
    with time_machine.travel(APRIL_5, tick=False):
        usage(lease, march(1), seconds=0)  # a rebuild found no events for an hour March billed
    other = BuyerFactory()
    usage(leased(buyer=other, provider=provider, at=SETUP), datetime(2026, 4, 3, tzinfo=UTC), seconds=3600)
    aprils = list(Invoice.objects.filter(status="draft"))
    assert {invoice.buyer for invoice in aprils} == {march_invoice.buyer, other}

    finalized = invoices_finalize(invoice_ids=[invoice.pk for invoice in aprils], now=MAY_6)

    assert finalized == 1
    assert Invoice.objects.filter(buyer=march_invoice.buyer, status="draft").count() == 1
    assert Invoice.objects.get(buyer=other).status == "finalized"
    assert UsageRollup.objects.get(late=True).billed_quantity == 0  # still to be billed
    assert reconcile() == []
