import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection

from billing.models import Invoice, InvoiceLine, JournalEntry, ProviderStatement
from billing.services.invoices import invoice_finalize, invoice_for_period, invoice_void, invoices_due_for_finalizing
from billing.services.ledger import Purpose, balance_of
from billing.services.reconcile import reconcile
from pools.models import PricePlan
from pools.services import price_plan_create
from tests.billing.factories import leased, usage
from tests.factories import BuyerFactory, ProviderFactory

pytestmark = pytest.mark.django_db

SETUP = datetime(2026, 2, 20, tzinfo=UTC)
APRIL_5 = datetime(2026, 4, 5, tzinfo=UTC)


def shanghai(day: int, hour: int, month: int = 3) -> datetime:
    """A UTC hour given as Asia/Shanghai wall-clock time in 2026."""
    return datetime(2026, month, day, hour, tzinfo=UTC) - timedelta(hours=8)


@pytest.fixture
def lease(buyer, provider):  # type: ignore[no-untyped-def]
    return leased(buyer=buyer, provider=provider, at=SETUP)


def march_invoice(buyer) -> Invoice:  # type: ignore[no-untyped-def]
    return invoice_for_period(buyer=buyer, at=shanghai(15, 12))


def finalize(buyer, at: datetime = APRIL_5) -> Invoice:  # type: ignore[no-untyped-def]
    return invoice_finalize(invoice_id=march_invoice(buyer).pk, now=at)


def test_usage_is_rated_at_the_band_of_each_local_hour_with_edges_in_shanghai_time(buyer, lease) -> None:
    plan = lease.pool.price_plans.get()
    for hour in (6, 7, 9, 10):  # valley until 07:00, flat until 10:00, then peak (Beijing)
        usage(lease, shanghai(2, hour))

    lines = {line.band: line for line in finalize(buyer).lines.all()}

    assert set(lines) == {"valley", "flat", "peak"}
    assert lines["valley"].rate == Decimal(plan.hour_prices[6])
    assert lines["flat"].rate == Decimal(plan.hour_prices[7]) and lines["flat"].quantity == 2
    assert lines["peak"].rate == Decimal(plan.hour_prices[10])
    assert lines["valley"].rate < lines["flat"].rate < lines["peak"].rate


def test_usage_is_rated_with_the_price_version_in_force_in_its_hour(buyer, lease) -> None:
    flat_prices = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}
    with time_machine.travel(SETUP, tick=False):
        price_plan_create(
            pool=lease.pool,
            by="t",
            price_per_card_hour=Decimal(10),
            time_of_use=flat_prices,
            effective_from=shanghai(1, 0),
        )
        price_plan_create(pool=lease.pool, by="t", price_per_card_hour=Decimal(12), effective_from=shanghai(10, 0))
    usage(lease, shanghai(9, 23))
    usage(lease, shanghai(10, 0))

    rates = sorted(line.rate for line in finalize(buyer).lines.all())

    assert rates == [Decimal(10), Decimal(12)]


def test_tokens_are_rated_per_million_at_the_pools_token_prices(buyer, provider) -> None:
    prices = {"qwen3-72b": {"input": Decimal("2.00"), "output": Decimal("8.00")}}
    flat = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}  # the band factors apply to tokens too
    lease = leased(buyer=buyer, provider=provider, at=SETUP, token_prices=prices, time_of_use=flat)
    usage(lease, shanghai(3, 12), seconds=1_500_000, metric="input_tokens", model="qwen3-72b")
    usage(lease, shanghai(3, 12), seconds=250_000, metric="output_tokens", model="qwen3-72b")

    amounts = {line.metric: line.amount for line in finalize(buyer).lines.all()}

    assert amounts == {"input_tokens": 300, "output_tokens": 200}


def test_each_line_is_rounded_once_from_its_exact_amount(buyer, lease) -> None:
    with time_machine.travel(SETUP, tick=False):
        flat = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}
        price_plan_create(
            pool=lease.pool,
            by="t",
            price_per_card_hour=Decimal("0.0035"),
            time_of_use=flat,
            effective_from=shanghai(1, 0),
        )
    for day in range(1, 11):  # ten hours of 1 card-hour at 0.0035: 0.035 yuan, 4 fen; rounding each hour gives 0
        usage(lease, shanghai(day, 12))

    (line,) = finalize(buyer).lines.all()

    assert (line.quantity, line.amount) == (Decimal(10), 4)


def test_a_line_of_exactly_half_a_fen_rounds_up(buyer, lease) -> None:
    # Found by the money state machine: 57 card-seconds at 30 yuan a card-hour are 0.475 yuan,
    # but 57 / 3,600 has no exact decimal, and rounding it before the rate left 0.47499...
    with time_machine.travel(SETUP, tick=False):
        flat = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}
        price_plan_create(
            pool=lease.pool, by="t", price_per_card_hour=Decimal(30), time_of_use=flat, effective_from=shanghai(1, 0)
        )
    usage(lease, shanghai(2, 12), seconds=57)

    (line,) = finalize(buyer).lines.all()

    assert line.amount == 48


def test_a_finalized_month_posts_the_ledger_numbers_the_invoice_and_accrues_the_statement(
    buyer, provider, lease
) -> None:
    for day in range(1, 31):
        usage(lease, shanghai(day, 12), seconds=8 * 3600)

    invoice = finalize(buyer)

    assert invoice.status == "finalized"
    assert invoice.number == "CG-2026-000001"
    assert invoice.subtotal == sum(line.amount for line in invoice.lines.all()) > 0
    assert invoice.amount_due == invoice.subtotal
    statement = ProviderStatement.objects.get(provider=provider)
    assert statement.gross == invoice.subtotal
    assert statement.commission == (invoice.subtotal * 10 + 50) // 100
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == invoice.subtotal
    assert balance_of(purpose=Purpose.PROVIDER_PAYABLE, organization=provider) == -statement.net
    # the platform, the seller on the invoice, owes its VAT and keeps the rest of the commission
    assert balance_of(purpose=Purpose.VAT_PAYABLE) == -invoice.tax == -statement.tax
    assert balance_of(purpose=Purpose.PLATFORM_REVENUE) == -(statement.commission - invoice.tax)
    assert reconcile() == []


def test_an_open_period_cannot_be_finalized(buyer, lease) -> None:
    from core.exceptions import ConflictError

    usage(lease, shanghai(3, 12))

    with pytest.raises(ConflictError, match="still open"):
        finalize(buyer, at=shanghai(31, 23))


def test_finalizing_twice_changes_nothing_the_second_time(buyer, lease) -> None:
    usage(lease, shanghai(3, 12))

    first = finalize(buyer)
    second = finalize(buyer, at=APRIL_5 + timedelta(hours=1))

    assert (first.number, first.subtotal) == (second.number, second.subtotal)
    assert JournalEntry.objects.filter(reference=first.reference).count() == 1
    assert InvoiceLine.objects.filter(invoice=first).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_finalizations_give_one_invoice_one_number_one_set_of_entries() -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    for day in range(1, 8):
        usage(lease, shanghai(day, 12))
    invoice_id = march_invoice(buyer).pk
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait()
        try:
            invoice_finalize(invoice_id=invoice_id, now=APRIL_5)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    invoice = Invoice.objects.get(pk=invoice_id)
    assert invoice.number == "CG-2026-000001"
    assert JournalEntry.objects.filter(reference=invoice.reference).count() == 1
    assert invoice.lines.count() == 1
    assert reconcile() == []


def test_invoice_numbers_are_gapless_within_a_year(lease, provider) -> None:
    buyers = [lease.buyer, BuyerFactory(), BuyerFactory()]
    for buyer in buyers[1:]:
        usage(leased(buyer=buyer, provider=provider, at=SETUP), shanghai(3, 12))
    usage(lease, shanghai(3, 12))

    numbers = sorted(finalize(buyer).number for buyer in buyers)

    assert numbers == ["CG-2026-000001", "CG-2026-000002", "CG-2026-000003"]


def test_late_usage_of_a_finalized_month_goes_to_the_next_invoice_as_an_adjustment(buyer, lease) -> None:
    usage(lease, shanghai(3, 12), seconds=3600)
    march = finalize(buyer)

    with time_machine.travel(APRIL_5, tick=False):
        usage(lease, shanghai(3, 12), seconds=5400)  # a late event raised that hour's rollup
    april = Invoice.objects.get(buyer=buyer, status="draft")
    may_6 = datetime(2026, 5, 6, tzinfo=UTC)
    april = invoice_finalize(invoice_id=april.pk, now=may_6)

    (adjustment,) = april.lines.all()
    assert (adjustment.kind, adjustment.quantity) == ("adjustment", Decimal("0.5"))
    assert march.lines.count() == 1
    assert reconcile() == []


def test_the_settlement_scan_finalizes_closed_months_only_after_the_grace(buyer, lease) -> None:
    usage(lease, shanghai(20, 12))

    assert invoices_due_for_finalizing(now=datetime(2026, 4, 2, tzinfo=UTC)) == []
    due = invoices_due_for_finalizing(now=datetime(2026, 4, 4, tzinfo=UTC))

    assert due == [march_invoice(buyer).pk]


def test_voiding_reverses_the_ledger_and_the_statement(buyer, provider, lease) -> None:
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    invoice = finalize(buyer)

    invoice_void(invoice_id=invoice.pk, by="operator", reason="billed in error")

    assert Invoice.objects.get(pk=invoice.pk).status == "void"
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.PROVIDER_PAYABLE, organization=provider) == 0
    assert ProviderStatement.objects.get(provider=provider).gross == 0
    assert reconcile() == []


def test_the_buyer_watches_the_draft_grow_and_another_buyer_sees_nothing(
    buyer, lease, buyer_client, other_buyer_client
) -> None:
    usage(lease, shanghai(3, 12))
    invoice = march_invoice(buyer)
    first = buyer_client.get(f"/api/v1/invoices/{invoice.pk}/").json()

    usage(lease, shanghai(4, 12))
    second = buyer_client.get(f"/api/v1/invoices/{invoice.pk}/").json()

    assert first["status"] == second["status"] == "draft"
    assert Decimal(second["subtotal"]) > Decimal(first["subtotal"]) > 0
    assert other_buyer_client.get(f"/api/v1/invoices/{invoice.pk}/").status_code == 404
    assert other_buyer_client.post(f"/api/v1/invoices/{invoice.pk}/pay/", {}, format="json").status_code == 404
    assert other_buyer_client.get("/api/v1/invoices/").json()["results"] == []


def test_only_operators_void_and_providers_read_only_their_statements(
    buyer, provider, lease, buyer_client, make_client
) -> None:
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    invoice = finalize(buyer)

    assert buyer_client.post(f"/api/v1/invoices/{invoice.pk}/void/", {}, format="json").status_code == 403
    mine = make_client(provider).get("/api/v1/statements/").json()["results"]
    theirs = make_client(ProviderFactory()).get("/api/v1/statements/").json()["results"]
    assert len(mine) == 1 and Decimal(mine[0]["gross"]) * 100 == invoice.subtotal
    assert theirs == []


def test_an_invoice_line_shows_its_rate_with_four_places_and_its_amount_from_the_exact_rate(
    buyer, lease, buyer_client
) -> None:
    PricePlan.objects.filter(pool=lease.pool).update(hour_prices=["12.3456500000"] * 24)
    usage(lease, shanghai(3, 12), seconds=1000 * 3600)  # 1,000 card-hours in one hour
    invoice = finalize(buyer)

    (line,) = buyer_client.get(f"/api/v1/invoices/{invoice.pk}/").json()["lines"]

    assert (line["quantity"], line["unit"], line["rate"]) == ("1000.0000000000", "card_hour", "12.3457")
    assert line["amount"] == "12345.65"  # 1,000 x 12.34565, not 1,000 x 12.3457
    assert InvoiceLine.objects.get(invoice=invoice).rate == Decimal("12.34565")
