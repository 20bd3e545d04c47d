"""A buyer extends its lease past its booked end: the extended hours are not price-locked, so a
rise reaches them after its notice, a decrease at once, and max_price binds there (issue 17,
points 1 to 3, on leases with hours past their lock)."""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import override_settings

from billing.services.reconcile import reconcile
from billing.services.usage import usage_events_ingest
from marketplace.dispatch import Requirements
from marketplace.models import FeedEvent, Lease
from marketplace.selectors import price_change_effects
from marketplace.services import lease_end, lease_start, leases_end_above_max_price, leases_end_expired, order_place
from pools.models import PricePlan, ResourcePool
from pools.services import pool_suspend
from tests.billing.test_price_hours import HOUR, change_price, finalize_march, report
from tests.factories import BuyerFactory, pool_factory

pytestmark = pytest.mark.django_db

FLAT = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}
BOOKED_END = HOUR + timedelta(hours=4)
EXTENDED_END = HOUR + timedelta(hours=10)
RISE_AT = HOUR + timedelta(hours=2, minutes=20)  # a rise published then, with 3 hours' notice ...
REACHES = RISE_AT + timedelta(hours=3)  # ... reaches running leases at 05:20 past HOUR


def t(hours: float) -> datetime:
    return HOUR + timedelta(hours=hours)


def new_pool(provider: Any, **prices: Any) -> ResourcePool:
    """A Beijing pool at 20 per card-hour (flat all day unless told), listed a minute before HOUR."""
    fields = {"time_of_use": FLAT, **prices}
    with time_machine.travel(HOUR - timedelta(minutes=1), tick=False):
        return pool_factory(  # type: ignore[no-any-return]
            provider=provider, hub_id="jingjinji", province="Beijing", price_per_card_hour=Decimal(20), cards=100,
            **fields,
        )  # fmt: skip


def booked(pool: ResourcePool, buyer: Any, *, hours: float = 4, max_price: float | None = None) -> Lease:
    """8 cards booked from HOUR for ``hours``, started 30 seconds later."""
    with time_machine.travel(HOUR, tick=False):
        order = order_place(
            buyer=buyer,
            requirements=Requirements(
                cards=8, duration_hours=hours, workload="training", pool=pool.pk, max_price=max_price
            ),
        )
    return lease_start(lease_id=order.leases.get().pk, by="test", now=HOUR + timedelta(seconds=30))


def extend(client: Any, lease: Lease, end_at: datetime, *, now: datetime) -> Any:
    with time_machine.travel(now, tick=False):
        return client.patch(f"/api/v1/leases/{lease.pk}/", {"end_at": end_at.isoformat()}, format="json")


def lines_by_rate(invoice: Any) -> dict[Decimal, Decimal]:
    hours: dict[Decimal, Decimal] = {}
    for line in invoice.lines.all():
        if line.quantity:
            hours[line.rate] = hours.get(line.rate, Decimal(0)) + line.quantity
    return hours


def report_each_hour(lease: Lease, hours: range, *, minute: int = 30) -> None:
    """An hour of one card's work reported in each of ``hours`` (past HOUR), at ``minute`` past."""
    for hour in hours:
        when = t(hour) + timedelta(minutes=minute)
        report(lease, f"h{hour}m{minute}", when, 3600, now=when + timedelta(seconds=10))


@pytest.fixture
def pool(provider: Any) -> ResourcePool:
    return new_pool(provider)


@pytest.fixture
def three_hours_notice(settings: Any) -> None:
    settings.PRICE_RISE_NOTICE_HOURS = 3


# --- The PATCH ---------------------------------------------------------------------------------


def test_an_extension_moves_the_end_and_keeps_the_lock_and_the_cards(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)
    reserved = ResourcePool.objects.get(pk=pool.pk).reserved_cards

    response = extend(buyer_client, lease, EXTENDED_END, now=t(1))

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["end_at"] == "2026-03-02T11:00:00Z"
    assert body["price_locked_until"] == "2026-03-02T05:00:00Z"
    assert Decimal(body["estimated_cost"]) == Decimal(8 * 20 * 10)  # the booked 4 hours and 6 more at 20
    lease.refresh_from_db()
    assert (lease.end_at, lease.price_locked_until) == (EXTENDED_END, BOOKED_END)
    assert ResourcePool.objects.get(pk=pool.pk).reserved_cards == reserved == 8


def test_a_replayed_extension_changes_nothing(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)
    first = extend(buyer_client, lease, EXTENDED_END, now=t(1))

    again = extend(buyer_client, lease, EXTENDED_END, now=t(1) + timedelta(minutes=1))

    assert again.status_code == 200 and again.json() == first.json()
    assert Lease.objects.get(pk=lease.pk).estimated_cost == Decimal(1600)


def test_the_extended_lease_runs_past_its_booked_end_and_ends_at_its_new_end(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)
    extend(buyer_client, lease, EXTENDED_END, now=t(1))

    with time_machine.travel(t(5), tick=False):
        assert leases_end_expired() == 0
    with time_machine.travel(t(10), tick=False):
        assert leases_end_expired() == 1

    lease.refresh_from_db()
    assert (lease.status, lease.end_reason, lease.ended_at) == ("completed", "booked_time_ended", t(10))
    assert ResourcePool.objects.get(pk=pool.pk).reserved_cards == 0


@pytest.mark.parametrize(
    ("end_at", "now", "code"),
    [
        (t(3), t(1), "end_not_later"),
        (t(1) + timedelta(hours=721), t(1), "extension_too_long"),
        (t(10), t(4), "lease_not_active"),  # its booked end passed: the beat ends it
    ],
)
def test_an_extension_against_the_rules_is_refused_and_changes_nothing(
    pool, buyer, buyer_client, end_at, now, code
) -> None:
    lease = booked(pool, buyer)

    response = extend(buyer_client, lease, end_at, now=now)

    assert (response.status_code, response.json()["error"]["code"]) == (422, code)
    assert Lease.objects.get(pk=lease.pk).end_at == BOOKED_END


def test_an_ended_lease_cannot_be_extended(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)
    lease_end(lease_id=lease.pk, status=Lease.Status.COMPLETED, reason="test", by="test", now=t(1))

    response = extend(buyer_client, lease, EXTENDED_END, now=t(2))

    assert (response.status_code, response.json()["error"]["code"]) == (422, "lease_not_active")


def test_a_lease_on_a_suspended_pool_cannot_be_extended(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)
    with time_machine.travel(t(1), tick=False):
        pool_suspend(pool=pool, by="operator", reason="maintenance")

    response = extend(buyer_client, lease, EXTENDED_END, now=t(1))

    assert (response.status_code, response.json()["error"]["code"]) == (422, "pool_not_active")
    assert Lease.objects.get(pk=lease.pk).end_at == BOOKED_END


@pytest.mark.parametrize(
    ("who", "status", "code"), [("other", 404, "not_found"), ("provider", 403, "permission_denied")]
)
def test_only_the_leases_buyer_extends_it(pool, buyer, provider, make_client, who, status, code) -> None:
    lease = booked(pool, buyer)
    client = make_client({"other": BuyerFactory(), "provider": provider}[who])

    response = extend(client, lease, EXTENDED_END, now=t(1))

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert Lease.objects.get(pk=lease.pk).end_at == BOOKED_END


def test_a_patch_with_nothing_to_change_is_refused(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)

    with time_machine.travel(t(1), tick=False):
        response = buyer_client.patch(f"/api/v1/leases/{lease.pk}/", {}, format="json")

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "validation_error")
    assert error["fields"]["non_field_errors"][0]["code"] == "nothing_to_change"


# --- Billing of the extended hours --------------------------------------------------------------


def test_a_rise_bills_the_booked_hours_locked_then_the_old_price_through_the_notice_then_the_new(
    pool, buyer, buyer_client, three_hours_notice
) -> None:
    lease = booked(pool, buyer)
    extend(buyer_client, lease, EXTENDED_END, now=t(1))
    change_price(lease, Decimal(100), now=RISE_AT)
    report_each_hour(lease, range(10), minute=10)  # 5:10 is before the rise reaches the lease
    report_each_hour(lease, range(5, 10), minute=40)  # 5:40 and later are after

    invoice = finalize_march(buyer)

    # Hours 0-3 booked (locked at 20), 4:10 and 5:10 in the notice (the old 20), 5:40 on at 100.
    assert lines_by_rate(invoice) == {Decimal(20): Decimal(6), Decimal(100): Decimal(9)}
    assert invoice.subtotal == (6 * 20 + 9 * 100) * 100
    assert reconcile() == []


def test_a_decrease_reaches_the_extended_hours_at_once_and_not_the_booked_ones(pool, buyer, buyer_client) -> None:
    lease = booked(pool, buyer)
    extend(buyer_client, lease, EXTENDED_END, now=t(1))
    change_price(lease, Decimal(10), now=RISE_AT)
    report_each_hour(lease, range(10))

    invoice = finalize_march(buyer)

    assert lines_by_rate(invoice) == {Decimal(20): Decimal(4), Decimal(10): Decimal(6)}
    assert invoice.subtotal == (4 * 20 + 6 * 10) * 100
    assert reconcile() == []


def test_max_price_ends_the_extended_lease_at_the_second_the_rise_reaches_it_billed_to_then(
    pool, buyer, buyer_client, three_hours_notice
) -> None:
    lease = booked(pool, buyer, max_price=25)
    extend(buyer_client, lease, EXTENDED_END, now=t(1))
    change_price(lease, Decimal(100), now=RISE_AT + timedelta(seconds=7))
    report_each_hour(lease, range(6), minute=10)  # the last at 5:10, before the rise reaches the lease

    with time_machine.travel(REACHES + timedelta(seconds=50), tick=False):
        assert leases_end_above_max_price() == 1
        assert leases_end_above_max_price() == 0  # twice changes nothing
    late = {
        "specversion": "1.0", "id": "late", "source": "agent://test/pool", "type": "compute.gpu_seconds",
        "subject": str(lease.pk), "time": (REACHES + timedelta(seconds=7 + 121)).isoformat(),
        "data": {"quantity": 60, "cards": 8},
    }  # fmt: skip
    refused = usage_events_ingest(provider_id=lease.provider_id, events=[late], now=REACHES + timedelta(minutes=3))

    lease.refresh_from_db()
    assert (lease.status, lease.end_reason) == ("completed", "price_above_max")
    assert lease.ended_at == REACHES + timedelta(seconds=7)
    assert [error["code"] for error in refused.errors] == ["outside_lease"]
    invoice = finalize_march(buyer)
    plain = sum(Decimal(20) * 1 for _ in range(6))  # six card-hours, every one at 20, none at 100
    assert lines_by_rate(invoice) == {Decimal(20): Decimal(6)}
    assert sum(line.amount for line in invoice.lines.all()) == invoice.subtotal == int(plain * 100)
    assert FeedEvent.objects.filter(kind="price_above_max", organization=buyer, lease=lease).count() == 1
    assert reconcile() == []


def test_usage_past_the_max_price_second_is_refused_before_the_beat_ends_the_lease(
    pool, buyer, buyer_client, three_hours_notice
) -> None:
    lease = booked(pool, buyer, max_price=25)
    extend(buyer_client, lease, EXTENDED_END, now=t(1))
    change_price(lease, Decimal(100), now=RISE_AT)
    events = [
        {
            "specversion": "1.0",
            "id": name,
            "source": "agent://test/pool",
            "type": "compute.gpu_seconds",
            "subject": str(lease.pk),
            "time": when.isoformat(),
            "data": {"quantity": 60, "cards": 8},
        }
        for name, when in (("in-time", REACHES - timedelta(seconds=1)), ("late", REACHES + timedelta(seconds=121)))
    ]

    result = usage_events_ingest(provider_id=lease.provider_id, events=events, now=REACHES + timedelta(minutes=3))

    assert result.accepted == 1
    assert [(error["id"], error["code"]) for error in result.errors] == [("late", "outside_lease")]
    assert Lease.objects.get(pk=lease.pk).status == "running"  # the beat has not run yet


def test_max_price_leaves_an_extended_lease_alone_until_the_rise_reaches_it(
    pool, buyer, buyer_client, three_hours_notice
) -> None:
    lease = booked(pool, buyer, max_price=25)
    extend(buyer_client, lease, EXTENDED_END, now=t(1))
    change_price(lease, Decimal(100), now=RISE_AT)

    with time_machine.travel(REACHES - timedelta(seconds=1), tick=False):
        assert leases_end_above_max_price() == 0  # past its lock, inside the notice: the old price


def test_max_price_never_ends_a_lease_inside_its_booked_hours(pool, buyer, buyer_client, settings) -> None:
    settings.PRICE_RISE_NOTICE_HOURS = 0
    lease = booked(pool, buyer, max_price=25)  # not extended: every hour of it is locked
    change_price(lease, Decimal(100), now=t(1))

    with time_machine.travel(t(3), tick=False):
        assert leases_end_above_max_price() == 0
    assert Lease.objects.get(pk=lease.pk).status == "running"


# --- Who a rise reaches: the dry run and the feed -------------------------------------------------


def plain_change(lease: Lease, old: list[str], new: list[str], since: datetime) -> Decimal:
    """Cards x (new - old) per card-hour, minute by minute from ``since`` to the lease's end, each
    minute at the price of its local hour (Shanghai is UTC+8)."""
    change, minute = Decimal(0), since
    while minute < lease.end_at:
        local = (minute.hour + 8) % 24
        change += lease.cards * (Decimal(new[local]) - Decimal(old[local])) / 60
        minute += timedelta(minutes=1)
    return change


@override_settings(PRICE_RISE_NOTICE_HOURS=3)
def test_the_dry_run_lists_exactly_the_leases_whose_unlocked_hours_the_rise_reaches(
    provider, buyer, make_client
) -> None:
    pool = new_pool(provider, time_of_use=None)  # the hub's own peak, flat and valley bands
    buyer_client = make_client(buyer)
    reached = booked(pool, buyer)
    extend(buyer_client, reached, EXTENDED_END + timedelta(minutes=30), now=t(1))
    booked_only = booked(pool, BuyerFactory(), hours=8)  # runs past the rise's reach, all of it locked
    too_short = booked(pool, buyer)
    extend(buyer_client, too_short, t(5), now=t(1))  # unlocked from 4:00 to 5:00, before the rise reaches
    ended = booked(pool, buyer)
    extend(buyer_client, ended, EXTENDED_END, now=t(1))
    lease_end(lease_id=ended.pk, status=Lease.Status.COMPLETED, reason="test", by="test", now=t(2))
    elsewhere = booked(new_pool(provider), buyer)
    extend(buyer_client, elsewhere, EXTENDED_END, now=t(1))
    old = pool.price_plans.get().hour_prices

    with time_machine.travel(t(2), tick=False):
        response = make_client(provider).post(
            f"/api/v1/pools/{pool.pk}/prices/?dry_run=true", {"price_per_card_hour": "100"}, format="json"
        )

    assert response.status_code == 200, response.json()
    body = response.json()
    (affected,) = body["affected_leases"]
    assert affected["lease"] == str(reached.pk)
    assert affected["takes_effect_at"] == "2026-03-02T06:00:00Z"  # t(2) + the notice, after the lock ended (05:00Z)
    reached.refresh_from_db()
    expected = plain_change(reached, old, body["version"]["hour_prices"], since=t(5))
    assert expected > 0
    assert Decimal(affected["expected_cost_change"]) == expected.quantize(Decimal("0.01"))
    assert PricePlan.objects.filter(pool=pool).count() == 1 and not FeedEvent.objects.exists()
    assert booked_only.pk and too_short.pk  # listed by neither


@override_settings(PRICE_RISE_NOTICE_HOURS=3)
def test_the_effects_of_a_decrease_count_from_the_lock_or_now_whichever_is_later(provider, buyer, make_client) -> None:
    pool = new_pool(provider, time_of_use=None)
    lease = booked(pool, buyer)
    extend(make_client(buyer), lease, EXTENDED_END, now=t(1))
    old = pool.price_plans.get().hour_prices

    with time_machine.travel(t(2), tick=False):
        body = (
            make_client(provider)
            .post(f"/api/v1/pools/{pool.pk}/prices/?dry_run=true", {"price_per_card_hour": "15"}, format="json")
            .json()
        )

    (affected,) = body["affected_leases"]
    assert affected["takes_effect_at"] == "2026-03-02T05:00:00Z"  # at once, but not inside the lock
    lease.refresh_from_db()
    expected = plain_change(lease, old, body["version"]["hour_prices"], since=BOOKED_END)
    assert expected < 0
    assert Decimal(affected["expected_cost_change"]) == expected.quantize(Decimal("0.01"))


def test_a_rise_tells_only_the_buyers_whose_unlocked_hours_it_reaches(
    pool, provider, buyer, buyer_client, make_client, three_hours_notice
) -> None:
    reached = booked(pool, buyer)
    extend(buyer_client, reached, EXTENDED_END, now=t(1))
    other_buyer = BuyerFactory()
    booked(pool, other_buyer, hours=8)

    with time_machine.travel(RISE_AT, tick=False):
        response = make_client(provider).post(
            f"/api/v1/pools/{pool.pk}/prices/", {"price_per_card_hour": "100"}, format="json"
        )

    assert response.status_code == 201, response.json()
    (event,) = FeedEvent.objects.all()
    assert (event.organization, event.kind, event.lease_id) == (buyer, "price_rise", reached.pk)
    assert event.data["takes_effect_at"] == REACHES.isoformat()
    assert (
        Decimal(event.data["expected_cost_change"])
        == price_change_effects(PricePlan.objects.get(pool=pool, version=2), now=RISE_AT)[0]["expected_cost_change"]
    )
