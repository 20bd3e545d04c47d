"""Reserved capacity is billed as booked (take-or-pay); deposited card-hours resold to another buyer
credit the depositor's bank once, at the reseller's finalization; the provider is paid once per
card-hour (issue 19, points 1 to 3 and 6)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db.models import Sum

from billing.models import CreditGrant, DepositResale, Invoice, InvoiceLine, ProviderStatement, UsageRollup
from billing.reservations import deposits_earned
from billing.services.invoices import invoice_finalize, invoice_for_period, invoice_void, invoices_due_for_finalizing
from billing.services.reconcile import reconcile
from core.exceptions import ConflictError, RuleViolation
from marketplace.deposits import deposit_create, deposit_withdraw
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_end, lease_start, order_cancel, order_place
from pools.models import PricePlan, ResourcePool
from tests.billing.test_price_hours import FLAT, report
from tests.factories import BuyerFactory, pool_factory

pytestmark = pytest.mark.django_db

BOOKED = datetime(2026, 3, 2, 0, tzinfo=UTC)  # 08:00 in Shanghai
APRIL_5 = datetime(2026, 4, 5, tzinfo=UTC)
MAY_6 = datetime(2026, 5, 6, tzinfo=UTC)
H = timedelta(hours=1)


def reserved_pool(provider: Any, *, at: datetime, cards: int = 8) -> ResourcePool:
    """A pool of ``cards`` at 20 yuan a card-hour all day, 25% off for reserved bookings."""
    with time_machine.travel(at, tick=False):
        pool = pool_factory(
            provider=provider,
            cards=cards,
            hub_id="jingjinji",
            province="Beijing",
            price_per_card_hour=Decimal(20),
            time_of_use=FLAT,
        )
    PricePlan.objects.filter(pool=pool).update(reserved_discount=Decimal("0.25"))
    return pool


def order(
    buyer: Any,
    pool: ResourcePool,
    *,
    at: datetime,
    cards: int = 8,
    hours: float = 10,
    commitment: str = "reserved",
    start: datetime | None = None,
) -> Lease:
    ResourcePool.objects.filter(pk=pool.pk).update(last_heartbeat_at=at)  # the pool's agent is alive
    with time_machine.travel(at, tick=False):
        placed = order_place(
            buyer=buyer,
            requirements=Requirements(
                cards=cards,
                duration_hours=hours,
                workload="training",
                pool=pool.pk,
                commitment=commitment,
                earliest_start=start,
            ),
            now=at,
        )
    return placed.leases.get()


def finalize(buyer: Any, month: datetime, now: datetime) -> Invoice:
    with time_machine.travel(now, tick=False):
        invoice = invoice_for_period(buyer=buyer, at=month)
        return invoice_finalize(invoice_id=invoice.pk, now=now)


def lines(invoice: Invoice, kind: str) -> list[tuple[Decimal, Decimal, int]]:
    """Card-hours, rate and fen of the invoice's lines of ``kind``, summed per rate (a line per band)."""
    by_rate: dict[Decimal, tuple[Decimal, int]] = {}
    for line in invoice.lines.filter(kind=kind):
        quantity, amount = by_rate.get(line.rate, (Decimal(0), 0))
        by_rate[line.rate] = (quantity + line.quantity, amount + line.amount)
    return sorted((quantity, rate, amount) for rate, (quantity, amount) in by_rate.items())


def test_a_reserved_booking_with_no_usage_bills_every_booked_card_hour_at_the_reserved_price(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    order(buyer, pool, at=BOOKED)  # 8 cards for 10 hours, never started, never used

    with time_machine.travel(APRIL_5 + timedelta(days=1), tick=False):
        due = invoices_due_for_finalizing(now=APRIL_5 + timedelta(days=1))  # its month's draft is made
    invoice = finalize(buyer, BOOKED, APRIL_5 + timedelta(days=1))

    assert invoice.pk in due
    assert lines(invoice, InvoiceLine.Kind.RESERVED) == [(Decimal(80), Decimal(15), 120000)]
    assert invoice.subtotal == 120000
    statement = ProviderStatement.objects.get(provider=provider)
    assert statement.gross == 120000
    assert reconcile() == []


def test_a_reserved_leases_usage_is_rolled_up_but_billed_by_the_booking_only(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED)
    lease_start(lease_id=lease.pk, by="provider", now=BOOKED + timedelta(seconds=10))
    report(lease, "used", BOOKED + timedelta(minutes=30), 8 * 1800, now=BOOKED + timedelta(minutes=31))

    invoice = finalize(buyer, BOOKED, APRIL_5)

    assert UsageRollup.objects.filter(lease=lease).aggregate(q=Sum("quantity"))["q"] == 8 * 1800
    assert {line.kind for line in invoice.lines.all()} == {InvoiceLine.Kind.RESERVED}
    assert invoice.subtotal == 120000
    assert reconcile() == []


def test_a_reserved_booking_cancelled_before_its_start_bills_the_cancellation_fee(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED, start=BOOKED + 5 * H)

    with time_machine.travel(BOOKED + H, tick=False):  # before its start
        order_cancel(order=lease.order, by="buyer")

    invoice = finalize(buyer, BOOKED, APRIL_5)
    ((quantity, rate, amount),) = lines(invoice, InvoiceLine.Kind.CANCEL_FEE)
    assert (quantity, amount) == (Decimal(80), 12000)  # 10% of 1,200.00 booked
    assert rate == Decimal("1.5")
    assert not invoice.lines.filter(kind=InvoiceLine.Kind.RESERVED).exists()
    assert reconcile() == []


def test_a_booking_due_next_month_and_cancelled_this_month_bills_its_fee_this_month(buyer, provider) -> None:
    # The money state machine's find: the fee fell between months, billed in neither.
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED, start=datetime(2026, 4, 2, tzinfo=UTC))

    with time_machine.travel(BOOKED + H, tick=False):  # in March, before its April start
        order_cancel(order=lease.order, by="buyer")
    with time_machine.travel(APRIL_5, tick=False):
        due = invoices_due_for_finalizing(now=APRIL_5)  # March's draft is made for the fee alone
    invoice = finalize(buyer, BOOKED, APRIL_5)

    assert invoice.pk in due
    assert [(quantity, amount) for quantity, _, amount in lines(invoice, InvoiceLine.Kind.CANCEL_FEE)] == [
        (Decimal(80), 12000)
    ]
    april = finalize(buyer, datetime(2026, 4, 2, tzinfo=UTC), MAY_6)
    assert not april.lines.exists()
    assert reconcile() == []


def test_a_reserved_lease_cannot_start_before_its_booked_start(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED, start=BOOKED + 5 * H)

    with pytest.raises(Exception, match="booked to start") as refused:
        lease_start(lease_id=lease.pk, by="provider", now=BOOKED + 5 * H - timedelta(minutes=2))
    assert refused.value.code == "lease_not_due"  # type: ignore[attr-defined]


def _resold(depositor: Any, reseller: Any, provider: Any) -> tuple[Lease, Any, Lease]:
    """A reserves the whole pool (8 cards, 10 hours), deposits 4 cards from the third hour;
    B places 4 cards for 2 hours on them, uses them fully and ends."""
    pool = reserved_pool(provider, at=BOOKED)
    held = order(depositor, pool, at=BOOKED)
    lease_start(lease_id=held.pk, by="provider", now=BOOKED + timedelta(seconds=10))
    deposit = deposit_create(lease=held, depositor=depositor, cards=4, start_at=BOOKED + 2 * H, by="a", now=BOOKED + H)
    resale = order(reseller, pool, at=BOOKED + 2 * H, cards=4, hours=2, commitment="on_demand")
    lease_start(lease_id=resale.pk, by="provider", now=BOOKED + 2 * H + timedelta(seconds=5))
    report(resale, "r1", BOOKED + 2 * H + timedelta(minutes=30), 4 * 3600, now=BOOKED + 3 * H)
    report(resale, "r2", BOOKED + 3 * H + timedelta(minutes=30), 4 * 3600, now=BOOKED + 4 * H)
    lease_end(lease_id=resale.pk, status=Lease.Status.COMPLETED, reason="done", by="b", now=BOOKED + 4 * H)
    return held, deposit, resale


def test_a_deposit_resold_in_part_is_credited_once_at_finalization_and_withdrawn_for_the_rest(provider) -> None:
    depositor, reseller, third = BuyerFactory(), BuyerFactory(), BuyerFactory()
    held, deposit, resale = _resold(depositor, reseller, provider)
    assert (resale.deposit_id, resale.holding) == (deposit.pk, False)
    assert ResourcePool.objects.get(pk=held.pool_id).reserved_cards == 8  # the resale held no cards of its own

    withdrawn = deposit_withdraw(deposit=deposit, by="a", now=BOOKED + 4 * H + timedelta(minutes=20))
    assert withdrawn.end_at == BOOKED + 5 * H  # the hours from the next whole hour go back to A
    with pytest.raises(RuleViolation) as refused:
        order(third, held.pool, at=BOOKED + 5 * H, cards=1, hours=1, commitment="on_demand")
    assert refused.value.code == "pool_rejected"

    assert not CreditGrant.objects.filter(buyer=depositor).exists()  # nothing before the reseller's invoice
    invoice = finalize(reseller, BOOKED, APRIL_5)
    again = finalize(reseller, BOOKED, APRIL_5 + H)

    assert lines(invoice, InvoiceLine.Kind.RESALE) == [(Decimal(8), Decimal(20), 16000)]
    (grant,) = CreditGrant.objects.filter(buyer=depositor)
    assert (grant.source, grant.amount) == (CreditGrant.Source.CAPACITY_DEPOSIT, 12800)  # 16,000 less 20%
    assert again.pk == invoice.pk and DepositResale.objects.count() == 1
    assert deposits_earned([deposit.pk]) == {deposit.pk: (Decimal(8), 12800)}
    finalize(depositor, BOOKED, APRIL_5)
    # The provider is paid once per card-hour: by A's reservation, not again by B's resale.
    assert ProviderStatement.objects.get(provider=provider).gross == 120000
    assert reconcile() == []


def test_a_deposit_across_a_month_end_credits_each_month_at_its_own_finalization(buyer, provider) -> None:
    reseller = BuyerFactory()
    month_end = datetime(2026, 3, 31, 16, tzinfo=UTC)  # April starts in Shanghai
    pool = reserved_pool(provider, at=month_end - 5 * H)
    held = order(buyer, pool, at=month_end - 4 * H, hours=8)
    deposit = deposit_create(
        lease=held, depositor=buyer, cards=8, start_at=month_end - 2 * H, by="a", now=held.start_at
    )
    resale = order(reseller, pool, at=month_end - 2 * H, hours=4, commitment="on_demand")
    lease_start(lease_id=resale.pk, by="provider", now=month_end - 2 * H)
    for n, hour in enumerate((-2, -1, 0, 1)):
        when = month_end + hour * H + timedelta(minutes=30)
        report(resale, f"e{n}", when, 8 * 3600, now=month_end + (hour + 1) * H)

    march = finalize(reseller, month_end - H, APRIL_5)
    assert deposits_earned([deposit.pk]) == {deposit.pk: (Decimal(16), 25600)}  # 2 hours x 8 cards x 20, less 20%
    april = finalize(reseller, month_end + H, MAY_6)

    assert march.subtotal == april.subtotal == 32000
    assert deposits_earned([deposit.pk]) == {deposit.pk: (Decimal(32), 51200)}
    grants = CreditGrant.objects.filter(buyer=buyer, source="capacity_deposit")
    assert grants.aggregate(total=Sum("amount"))["total"] == 51200  # one grant per resale line, each once
    assert grants.count() == InvoiceLine.objects.filter(kind=InvoiceLine.Kind.RESALE).count()
    held_march = finalize(buyer, month_end - H, APRIL_5)
    held_april = finalize(buyer, month_end + H, MAY_6)
    assert lines(held_march, InvoiceLine.Kind.RESERVED) == [(Decimal(32), Decimal(15), 48000)]
    assert lines(held_april, InvoiceLine.Kind.RESERVED) == [(Decimal(32), Decimal(15), 48000)]
    assert reconcile() == []


def test_an_invoice_whose_resale_credited_a_depositor_is_not_voided(provider) -> None:
    depositor, reseller = BuyerFactory(), BuyerFactory()
    _resold(depositor, reseller, provider)
    invoice = finalize(reseller, BOOKED, APRIL_5)

    with pytest.raises(ConflictError) as refused:
        invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5 + H)

    assert refused.value.code == "resale_credited"
    invoice.refresh_from_db()
    assert invoice.status != Invoice.Status.VOID
    assert reconcile() == []
