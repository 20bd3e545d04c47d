"""Usage is rated with the price version in force when it happened, also in the hour a version
takes effect (a pool's first hour, a price changed mid-hour); usage without a price is never
dropped silently (issue 15, point 1)."""

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import transaction

from billing.models import Invoice, UsageRollup, UsageRollupDue
from billing.services.invoices import invoice_finalize, invoice_for_period, invoices_finalize
from billing.services.reconcile import reconcile
from billing.services.usage import usage_events_ingest, usage_rollup_buckets, usage_rollups_rebuild
from marketplace.models import Lease
from marketplace.services import lease_start
from pools.services import price_plan_create
from tests.billing.factories import leased, usage
from tests.factories import BuyerFactory, ProviderFactory
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db

SETUP = datetime(2026, 2, 20, tzinfo=UTC)
HOUR = datetime(2026, 3, 2, 1, tzinfo=UTC)  # 09:00 in Shanghai: the flat band of Beijing all hour long
EARLIER = HOUR - timedelta(hours=1)  # a pool listed before that hour (its leases are booked for 24 hours)
APRIL_5 = datetime(2026, 4, 5, tzinfo=UTC)
MAY_6 = datetime(2026, 5, 6, tzinfo=UTC)
FLAT = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}


def at(minute: int, second: int = 0) -> datetime:
    return HOUR + timedelta(minutes=minute, seconds=second)


def report(lease: Lease, event_id: str, when: datetime, seconds: int, *, now: datetime) -> None:
    """The provider's agent reports ``seconds`` card-seconds at ``when``; the rollup task runs."""
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "agent://test/pool",
        "type": "compute.gpu_seconds",
        "subject": str(lease.pk),
        "time": when.isoformat(),
        "data": {"quantity": seconds, "cards": lease.cards},
    }
    with time_machine.travel(now, tick=False):
        result = usage_events_ingest(provider_id=lease.provider_id, events=[event], now=now)
        assert result.accepted == 1, result.errors
        usage_rollup_buckets(
            buckets=[(lease.pk, datetime.fromtimestamp(hour * 3600, UTC)) for _, hour in result.buckets]
        )


def rollups_run(now: datetime) -> None:
    """The rollup task for every bucket marked due (what the queued task, or beat, does)."""
    with time_machine.travel(now, tick=False):
        usage_rollup_buckets(buckets=list(UsageRollupDue.objects.values_list("lease_id", "hour")))


def started(
    buyer: Any, provider: Any, *, registered: datetime, price: Decimal = Decimal(20), hours: float = 24
) -> Lease:
    """A lease booked for ``hours`` on a pool registered at ``registered`` (flat prices all day),
    started 30 seconds later."""
    lease = leased(buyer=buyer, provider=provider, at=registered, price=price, time_of_use=FLAT, hours=hours)
    return lease_start(lease_id=lease.pk, by="test", now=registered + timedelta(seconds=30))


def change_price(lease: Lease, price: Decimal, *, now: datetime, effective_from: datetime | None = None) -> None:
    with time_machine.travel(now, tick=False):
        price_plan_create(pool=lease.pool, by="provider", price_per_card_hour=price, effective_from=effective_from)


@pytest.fixture
def unlocked(settings: Any) -> None:
    """Usage outside the price lock, priced by the version in force: the leases of these tests are
    booked until HOUR, their agents report for up to an hour past it, and rises apply at once."""
    settings.USAGE_TIME_GRACE_SECONDS = 3600
    settings.PRICE_RISE_NOTICE_HOURS = 0


def finalize_march(buyer: Any) -> Invoice:
    with time_machine.travel(APRIL_5, tick=False):
        invoice = invoice_for_period(buyer=buyer, at=HOUR)
        return invoice_finalize(invoice_id=invoice.pk, now=APRIL_5)


def test_usage_in_the_hour_a_pool_is_registered_is_billed_at_its_first_price(buyer, provider) -> None:
    # Found from outside: a pool registered at 01:57, usage at 01:58; the 01:00 hour was in
    # /usage/ and on the provider's dashboard, on no invoice line.
    lease = started(buyer, provider, registered=at(57))
    report(lease, "e1", at(58), 8 * 60, now=at(59))

    invoice = finalize_march(buyer)

    (line,) = invoice.lines.all()
    assert (line.quantity, line.rate, line.amount) == (Decimal("0.1333333333"), Decimal(20), 267)
    assert invoice.subtotal == 267
    assert reconcile() == []


def test_an_hour_whose_price_changes_at_half_past_bills_each_side_at_its_own_price(buyer, provider, unlocked) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    report(lease, "before", at(10), 8 * 600, now=at(11))
    change_price(lease, Decimal(30), now=at(30))
    report(lease, "after", at(45), 8 * 900, now=at(46))

    invoice = finalize_march(buyer)

    lines = sorted((line.rate, line.quantity, line.amount) for line in invoice.lines.all())
    assert lines == [
        (Decimal(20), Decimal("1.3333333333"), 2667),  # 4,800 card-seconds at 20
        (Decimal(30), Decimal(2), 6000),
    ]
    assert reconcile() == []


def test_the_split_hour_keeps_the_time_of_use_band_of_its_local_hour(buyer, provider, unlocked) -> None:
    lease = leased(buyer=buyer, provider=provider, at=EARLIER, price=Decimal(20), hours=3)  # the hub's own bands
    lease = lease_start(lease_id=lease.pk, by="test", now=EARLIER)
    peak = HOUR + timedelta(hours=2)  # 11:00 in Shanghai, peak in Beijing
    report(lease, "before", peak + timedelta(minutes=10), 3600, now=peak + timedelta(minutes=11))
    change_price(lease, Decimal(30), now=peak + timedelta(minutes=30))
    report(lease, "after", peak + timedelta(minutes=40), 3600, now=peak + timedelta(minutes=41))

    invoice = finalize_march(buyer)

    old, new = lease.pool.price_plans.order_by("version")
    rates = sorted((line.band, line.rate) for line in invoice.lines.all())
    assert rates == sorted([("peak", Decimal(old.hour_prices[11])), ("peak", Decimal(new.hour_prices[11]))])
    assert Decimal(new.hour_prices[11]) > Decimal(30)  # the peak factor applies to the new base price too


def test_usage_rolled_up_before_a_price_change_that_covers_it_is_rolled_up_again(buyer, provider, unlocked) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    # An agent whose clock runs a little ahead: 01:31 reported at 01:29 (up to 5 minutes ahead is accepted).
    report(lease, "ahead", at(31), 3600, now=at(29))
    change_price(lease, Decimal(30), now=at(30))

    assert set(UsageRollupDue.objects.values_list("lease_id", "hour")) == {(lease.pk, HOUR)}
    rollups_run(now=at(30, 5))

    rows = {plan.version: quantity for plan, quantity in _rows(lease)}
    assert rows == {1: 0, 2: Decimal(3600)}  # the old version's row keeps nothing
    (line,) = [line for line in finalize_march(buyer).lines.all() if line.quantity]
    assert (line.rate, line.amount) == (Decimal(30), 3000)
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_a_price_version_made_while_its_hour_is_being_rolled_up_waits_and_reprices_it(unlocked) -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    event = {
        "specversion": "1.0", "id": "ahead", "source": "agent://test/pool", "type": "compute.gpu_seconds",
        "subject": str(lease.pk), "time": at(31).isoformat(), "data": {"quantity": 3600, "cards": 8},
    }  # fmt: skip
    usage_events_ingest(provider_id=provider.pk, events=[event], now=at(29))
    rolling_up = threading.Event()

    def roll_up_slowly() -> None:
        with transaction.atomic():
            usage_rollup_buckets(buckets=[(lease.pk, HOUR)])  # reads version 1 only
            rolling_up.set()
            time.sleep(1)  # the new version must wait for this commit, then see these rows

    def change_the_price() -> None:
        rolling_up.wait()
        price_plan_create(pool=lease.pool, by="provider", price_per_card_hour=Decimal(30))

    with time_machine.travel(at(30), tick=False):
        run_concurrently([roll_up_slowly, change_the_price])
    rollups_run(now=at(30, 5))

    assert {plan.version: quantity for plan, quantity in _rows(lease)} == {1: 0, 2: Decimal(3600)}
    assert reconcile() == []


def test_a_price_version_that_starts_within_the_skew_before_it_was_made_reprices_what_it_covers(
    buyer, provider, unlocked
) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    report(lease, "e1", at(29, 40), 1800, now=at(29, 45))
    # A decrease, which reaches running leases at its start (a rise, at its notice's end from now).
    change_price(lease, Decimal(10), now=at(30, 10), effective_from=at(29, 30))  # an agent's clock 40 s behind
    rollups_run(now=at(30, 15))

    lines = {line.rate: line.quantity for line in finalize_march(buyer).lines.all() if line.quantity}

    assert lines == {Decimal(10): Decimal("0.5")}


def test_usage_stamped_before_the_pools_first_price_is_rated_at_that_first_price(buyer, provider) -> None:
    # The lease started 30 s after its pool was listed; an agent's clock a minute behind stamps
    # usage before the listing, which ingest accepts (USAGE_TIME_GRACE_SECONDS): nothing ran
    # before the pool existed, so it is rated at the first price, never left without one.
    lease = started(buyer, provider, registered=at(57))
    report(lease, "skewed", at(56, 45), 60, now=at(58))

    (row,) = UsageRollup.objects.all()
    assert row.price_plan == lease.pool.price_plans.get()
    assert finalize_march(buyer).subtotal == 33  # 60 card-seconds at 20 yuan a card-hour


def test_a_rebuild_rates_usage_an_earlier_release_left_without_a_price_on_the_next_invoice(buyer, provider) -> None:
    lease = started(buyer, provider, registered=at(57))
    report(lease, "e1", at(58), 8 * 90, now=at(59))  # its 8 cards for the 90 seconds it has run
    UsageRollup.objects.update(price_plan=None)  # as the release before this fix stored that hour
    with time_machine.travel(APRIL_5, tick=False):
        held = invoice_for_period(buyer=buyer, at=HOUR)
        invoices_finalize(invoice_ids=[held.pk], now=APRIL_5)
        held.refresh_from_db()
        assert held.status == "draft"

        usage_rollups_rebuild()  # what the operator runs (manage.py rebuild_usage_rollups)
        invoices_finalize(invoice_ids=[held.pk], now=APRIL_5)

    held.refresh_from_db()
    assert (held.status, held.subtotal, held.hold_reason) == ("finalized", 400, "")  # 720 card-seconds at 20
    assert not UsageRollup.objects.filter(price_plan__isnull=True).exclude(quantity=0).exists()
    assert reconcile() == []


def _rows(lease: Lease) -> list[tuple[Any, Decimal]]:
    return [
        (row.price_plan, row.quantity) for row in UsageRollup.objects.filter(lease=lease).select_related("price_plan")
    ]


# --- usage without a price is never dropped silently ---------------------------------------


def without_a_price(buyer: Any, provider: Any) -> Invoice:
    """March usage of ``buyer`` stored without a price, as the release before this fix stored
    the hour a pool's first price took effect; returns March's invoice."""
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, HOUR, seconds=3600)
    UsageRollup.objects.filter(lease=lease).update(price_plan=None)
    return Invoice.objects.get(buyer=buyer)


def test_finalizing_sets_aside_an_invoice_with_unpriced_usage_with_an_alarm_and_finalizes_the_rest(
    buyer, provider, caplog
) -> None:
    held = without_a_price(buyer, provider)
    other: Any = BuyerFactory()
    usage(leased(buyer=other, provider=provider, at=SETUP), HOUR, seconds=3600)
    fine = Invoice.objects.get(buyer_id=other.pk)

    with caplog.at_level(logging.ERROR, logger="billing.services.invoices"):
        finalized = invoices_finalize(invoice_ids=[held.pk, fine.pk], now=APRIL_5)

    assert finalized == 1
    fine.refresh_from_db()
    held.refresh_from_db()
    assert fine.status == "finalized" and fine.subtotal > 0
    assert (held.status, held.subtotal, held.number) == ("draft", 0, None)
    assert held.hold_reason.startswith("usage without a price: 3600 gpu_seconds")
    (alarm,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert alarm.getMessage() == "invoice set aside: usage without a price"
    assert alarm.invoice == str(held.pk)  # type: ignore[attr-defined]


def test_reconcile_lists_unpriced_usage_and_the_invoice_set_aside_for_it(buyer, provider) -> None:
    held = without_a_price(buyer, provider)
    invoices_finalize(invoice_ids=[held.pk], now=APRIL_5)

    found = {difference.check: str(difference) for difference in reconcile()}

    assert set(found) == {"usage without a price", "invoice set aside"}
    assert "3600" in found["usage without a price"] and "2026-03-02 01:00" in found["usage without a price"]
    assert str(held.pk) in found["invoice set aside"]


def test_reconcile_finds_rolled_up_usage_of_a_finalized_month_on_no_invoice_line(buyer, provider) -> None:
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, HOUR, seconds=3600)
    usage(lease, HOUR + timedelta(hours=1), seconds=3600)
    invoice = finalize_march(buyer)
    invoice.lines.filter(quantity=1).first().delete()  # type: ignore[union-attr]  # a line lost, whatever the cause

    (difference,) = [d for d in reconcile() if d.check == "usage billed"]

    assert (difference.ledger, difference.expected) == (Decimal(3600), Decimal(7200))


def test_reconcile_finds_an_hour_billed_at_the_price_in_force_at_its_start_instead_of_when_used(
    buyer, provider, unlocked
) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    change_price(lease, Decimal(30), now=at(30))
    report(lease, "after", at(45), 900, now=at(46))
    old = lease.pool.price_plans.get(version=1)
    UsageRollup.objects.update(price_plan=old)  # as the release before this fix rated that hour

    found = [d for d in reconcile() if d.check == "usage by price version"]

    assert sorted((d.ledger, d.expected) for d in found) == [(0, 900), (900, 0)]
    assert all(str(lease.pk) in d.subject and "2026-03-02 01:00" in d.subject for d in found)
