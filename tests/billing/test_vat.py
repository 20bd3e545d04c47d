"""VAT: prices are tax-inclusive; each line's tax is split out of its amount by one rule (billing.vat),
an invoice's tax is the sum of its lines', the ledger books it as VAT payable, a void reverses it."""

from datetime import datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from billing.models import Invoice, InvoiceAdjustment, InvoiceLine, ProviderStatement
from billing.services.invoices import invoice_adjustment_add, invoice_finalize, invoice_void
from billing.services.ledger import Purpose, balance_of
from billing.services.reconcile import reconcile
from billing.vat import vat_rate_for, vat_split
from core.money import share
from core.timezones import local_zone
from tests.billing.factories import leased, usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.vouchers.factories import program_factory, voucher_factory

SIX = Decimal("0.06")
FLAT = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}


# --- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gross", "tax"),
    [
        (0, 0),
        (1, 0),  # 0.0566 fen
        (8, 0),  # 0.4528
        (9, 1),  # 0.5094: half up
        (53, 3),  # 53 x 0.06 / 1.06 = 3 exactly
        (106, 6),  # exactly 6
        (1_500_000, 84_906),  # 15,000 yuan: 849.0566 yuan of VAT
    ],
)
def test_tax_is_split_out_of_the_tax_inclusive_amount_half_up_to_the_fen(gross: int, tax: int) -> None:
    split = vat_split(gross, SIX)

    assert split.tax == tax
    assert split.net == gross - tax


def test_amount_without_tax_and_tax_add_up_to_the_amount_for_every_amount_to_100_yuan() -> None:
    for gross in range(0, 10_001):
        split = vat_split(gross, SIX)
        assert split.net + split.tax == gross
        assert 0 <= split.tax <= gross
        # the tax is the rate of the amount without tax, to within half a fen
        assert abs(Decimal(split.net) * SIX - split.tax) <= Decimal("0.5") * (1 + SIX)


def test_a_negative_amount_splits_to_the_negatives_of_the_positive_split() -> None:
    for gross in (1, 9, 53, 12_345, 1_500_000):
        assert vat_split(-gross, SIX).tax == -vat_split(gross, SIX).tax


def test_a_zero_rate_taxes_nothing_and_a_bad_rate_is_refused() -> None:
    assert vat_split(12_345, Decimal(0)).tax == 0
    with pytest.raises(ValueError):
        vat_split(100, Decimal("-0.01"))
    with pytest.raises(ValueError):
        vat_split(100, Decimal("NaN"))


def test_each_service_kind_has_its_rate_from_the_settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.VAT_RATES = {"card_hour": Decimal("0.06"), "million_tokens": Decimal("0.09"), "fee": Decimal("0.13")}

    assert vat_rate_for("card_hour") == Decimal("0.06")
    assert vat_rate_for("million_tokens") == Decimal("0.09")
    assert vat_rate_for("reserved_card_hour") == Decimal("0.13")  # a kind not named is taxed as a fee


# --- invoices ------------------------------------------------------------------------------


@pytest.fixture
def fen_per_second_lease(buyer, provider):  # type: ignore[no-untyped-def]
    """36 yuan a card-hour with no time-of-use factors: one card-second is one fen."""
    return leased(buyer=buyer, provider=provider, at=SETUP, price=Decimal("36"), time_of_use=FLAT)


@pytest.mark.django_db
def test_many_small_lines_are_taxed_each_and_the_invoice_tax_is_their_sum(buyer, fen_per_second_lease) -> None:
    # given three lines of 9 fen (one per time-of-use band): 0.51 fen of tax each
    for hour in (3, 8, 12):  # valley, flat, peak
        usage(fen_per_second_lease, shanghai(2, hour), seconds=9)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    lines = list(invoice.lines.all())
    assert [line.amount for line in lines] == [9, 9, 9]
    assert [(line.vat_rate, line.tax) for line in lines] == [(SIX, 1)] * 3
    # the invoice's tax is the lines' sum (3 fen), not a split of its 27 fen (2 fen)
    assert invoice.tax == 3 != vat_split(27, SIX).tax
    assert invoice.subtotal_without_tax + invoice.tax == invoice.subtotal == 27


@pytest.mark.django_db
def test_a_one_fen_line_carries_no_tax_and_still_adds_up(buyer, fen_per_second_lease) -> None:
    usage(fen_per_second_lease, shanghai(2, 12), seconds=1)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    line = invoice.lines.get()
    assert (line.amount, line.tax, line.amount_without_tax) == (1, 0, 1)
    assert invoice.tax == 0
    assert reconcile() == []


@pytest.mark.django_db
def test_the_ledger_books_the_invoices_vat_as_payable_and_the_platform_keeps_the_rest_of_its_commission(
    buyer, provider, settings
) -> None:  # type: ignore[no-untyped-def]
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    for day in range(2, 6):
        usage(lease, shanghai(day, 12), seconds=3_600 * 8)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    assert invoice.tax == sum(line.tax for line in invoice.lines.all()) > 0
    assert balance_of(purpose=Purpose.VAT_PAYABLE) == -invoice.tax
    commission = share(invoice.subtotal, settings.PLATFORM_COMMISSION_RATE)[0]
    assert balance_of(purpose=Purpose.PLATFORM_REVENUE) == -(commission - invoice.tax)
    # the provider is owed its lines less the commission, as before VAT
    assert balance_of(purpose=Purpose.PROVIDER_PAYABLE, organization=provider) == -(invoice.subtotal - commission)
    assert reconcile() == []


@pytest.mark.django_db
def test_the_providers_statement_shows_the_same_split_as_the_buyers_lines(buyer, provider) -> None:
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(2, 3), seconds=3_601)
    usage(lease, shanghai(2, 12), seconds=7_777)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    statement = ProviderStatement.objects.get(provider=provider)
    assert statement.gross == invoice.subtotal
    assert statement.tax == invoice.tax == sum(line.tax for line in invoice.lines.all())
    assert statement.gross_without_tax == invoice.subtotal_without_tax


@pytest.mark.django_db
def test_voiding_reverses_the_vat_once(buyer, provider) -> None:
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(2, 12), seconds=3_600 * 8)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    assert invoice.tax > 0

    invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5)
    with pytest.raises(Exception, match="cannot be voided"):
        invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5)

    assert balance_of(purpose=Purpose.VAT_PAYABLE) == 0
    assert ProviderStatement.objects.get(provider=provider).tax == 0
    assert Invoice.objects.get(pk=invoice.pk).tax == invoice.tax  # the void invoice still shows what it billed
    assert reconcile() == []


@pytest.mark.django_db
def test_a_voucher_pays_its_share_of_the_tax_inclusive_amount(buyer, provider, issuer) -> None:
    program = program_factory(issuer, coverage_share="0.3", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    voucher_factory(program, buyer, face_value=10_000_000)
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(2, 12), seconds=3_600 * 8)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    line = invoice.lines.get()
    assert line.voucher_amount == share(line.amount, Decimal("0.3"))[0]  # of the amount with tax, not without
    assert line.voucher_amount != share(line.amount_without_tax, Decimal("0.3"))[0]
    assert reconcile() == []


@pytest.mark.django_db
def test_a_billed_back_voucher_share_carries_no_second_vat(buyer, provider) -> None:
    # given a finalized March invoice, and the voucher share of its line billed back (a rejected claim line)
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(2, 12), seconds=3_600 * 8)
    march = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    source = march.lines.get()
    invoice_adjustment_add(
        buyer_id=buyer.pk,
        source_line_id=source.pk,
        reference="claim-line:test",
        amount=12_345,
        description="voucher claim rejected",
        now=APRIL_5,
    )
    april = Invoice.objects.get(buyer=buyer, status=Invoice.Status.DRAFT)

    invoice = invoice_finalize(invoice_id=april.pk, now=datetime(2026, 5, 5, tzinfo=local_zone()))

    billed_back = invoice.lines.get(kind=InvoiceLine.Kind.CLAIM_REJECTED)
    assert (billed_back.amount, billed_back.vat_rate, billed_back.tax) == (12_345, 0, 0)
    assert invoice.tax == 0
    assert balance_of(purpose=Purpose.VAT_PAYABLE) == -march.tax
    assert InvoiceAdjustment.objects.get().invoice_id == invoice.pk
    # (the claim rebill account is posted by a claim review, which this test leaves out)
    assert [d for d in reconcile() if d.check in ("invoice tax", "vat payable", "invoice line tax")] == []


@pytest.mark.django_db
def test_the_database_refuses_a_line_whose_tax_is_outside_its_amount(buyer, fen_per_second_lease) -> None:
    usage(fen_per_second_lease, shanghai(2, 12), seconds=100)
    line = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5).lines.get()

    for tax in (101, -1):
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE billing_invoiceline SET tax = %s WHERE id = %s", [tax, line.pk])


@pytest.mark.django_db
def test_reconcile_finds_an_invoice_whose_vat_is_not_booked_as_it_says(buyer, fen_per_second_lease) -> None:
    usage(fen_per_second_lease, shanghai(2, 12), seconds=1_000)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    Invoice.objects.filter(pk=invoice.pk).update(tax=F("tax") + 1)

    checks = {difference.check for difference in reconcile()}
    assert {"invoice tax", "vat payable"} <= checks


@pytest.mark.django_db
def test_a_negative_line_may_carry_its_negative_tax_and_no_other(buyer, fen_per_second_lease) -> None:
    # a correction line (late usage taking back an earlier hour) is negative: so is its tax
    usage(fen_per_second_lease, shanghai(2, 12), seconds=100)
    line = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5).lines.get()

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_invoiceline SET amount = -100, tax = %s WHERE id = %s", [-6, line.pk])
        transaction.set_rollback(True)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_invoiceline SET amount = -100, tax = 6 WHERE id = %s", [line.pk])
    assert vat_split(-100, SIX).tax == -6


@pytest.mark.django_db
def test_the_api_shows_the_split_on_the_invoice_and_the_statement(buyer, provider, make_client) -> None:  # type: ignore[no-untyped-def]
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(2, 3), seconds=3_601)
    usage(lease, shanghai(2, 12), seconds=7_777)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    body = make_client(buyer).get(f"/api/v1/invoices/{invoice.pk}/").json()
    (statement,) = make_client(provider).get("/api/v1/statements/").json()["results"]

    for line in body["lines"]:
        assert Decimal(line["amount_without_tax"]) + Decimal(line["tax"]) == Decimal(line["amount"])
        assert line["vat_rate"] == "0.0600"
    assert Decimal(body["tax"]) == sum(Decimal(line["tax"]) for line in body["lines"]) == Decimal(invoice.tax) / 100
    assert Decimal(body["subtotal_without_tax"]) + Decimal(body["tax"]) == Decimal(body["subtotal"])
    assert (statement["tax"], statement["gross"]) == (body["tax"], body["subtotal"])
    assert Decimal(statement["gross_without_tax"]) == Decimal(body["subtotal_without_tax"])


@pytest.mark.django_db
def test_a_draft_shows_its_vat_as_it_grows(buyer, fen_per_second_lease, make_client) -> None:  # type: ignore[no-untyped-def]
    for hour in (3, 8, 12):
        usage(fen_per_second_lease, shanghai(2, hour), seconds=9)

    body = make_client(buyer).get(f"/api/v1/invoices/{march_invoice(buyer).pk}/").json()

    assert body["status"] == "draft"
    assert [line["tax"] for line in body["lines"]] == ["0.01"] * 3
    assert body["tax"] == "0.03"
