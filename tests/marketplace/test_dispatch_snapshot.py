"""The dispatcher's pool snapshots (selectors.pool_snapshots), built from the offers snapshot and
kept between calls: always what the pools' rows say at that moment, as the full-pool query they
replaced read them, and every change that moves a quote seen at once."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from marketplace.deposits import deposit_create
from marketplace.dispatch import PoolSnapshot, Requirements
from marketplace.selectors import RELIABILITY_WINDOW, pool_snapshots, provider_reliability
from marketplace.services import quote
from orbit.reference_data import HUB_CODE as ORBIT_HUB
from pools.models import PricePlan, ResourcePool
from pools.selectors import fresh_after
from pools.services import pool_heartbeat, pool_reserve_cards, pool_suspend, price_plan_create
from pools.tariffs import hourly_kwh_prices
from tests.factories import pool_factory
from tests.marketplace.test_offer_snapshot import PEAK, _book_reserved, _this_hour, frozen, market

__all__ = ["frozen", "market"]  # the offers snapshot's fixtures: pools of every kind

pytestmark = pytest.mark.django_db


def _read_from_the_rows(now: datetime) -> list[PoolSnapshot]:
    """Every active pool on the ground with a version in force at ``now``, read from its rows now,
    in id order: what the full-pool query gave before the snapshot was kept."""
    reliability = provider_reliability(since=now - RELIABILITY_WINDOW)
    snapshots = []
    pools = (
        ResourcePool.objects.filter(status=ResourcePool.Status.ACTIVE)
        .exclude(hub_id=ORBIT_HUB)
        .select_related("hub", "gpu_model")
        .order_by("pk")
    )
    for pool in pools:
        plan = PricePlan.objects.filter(pool=pool, effective_from__lte=now).order_by("-effective_from").first()
        if plan is None:
            continue
        snapshots.append(
            PoolSnapshot(
                pool.pk,
                pool.provider_id,
                pool.hub_id,
                pool.hub.region,
                pool.gpu_model_id,
                pool.gpu_model.memory_gb,
                pool.gpu_model.power_watts,
                float(pool.green_share),
                float(pool.pue),
                tuple(float(price) for price in plan.hour_prices),
                hourly_kwh_prices(pool.hub.tariff),
                pool.hub.latency_ms,
                pool.free_cards,
                pool.last_heartbeat_at is None or pool.last_heartbeat_at < fresh_after(now),
                reliability.get(pool.provider_id, 1.0),
            )
        )
    return snapshots


def _snapshot_of(pool: ResourcePool) -> PoolSnapshot | None:
    return next((snapshot for snapshot in pool_snapshots(now=timezone.now()) if snapshot.id == pool.pk), None)


def test_the_snapshots_are_what_the_pools_rows_say(market) -> None:
    now = timezone.now()

    assert pool_snapshots(now=now) == _read_from_the_rows(now)
    assert pool_snapshots(now=now) == _read_from_the_rows(now)  # kept


# Each write commits before the next call, as in a server: the snapshot sees a change only through
# its pool's version (inside one test transaction it reads its own writes every time).
COMMITTED = pytest.mark.django_db(transaction=True)


@COMMITTED
def test_a_price_change_is_seen_at_once(market, frozen) -> None:
    pool = market[1]
    assert _snapshot_of(pool).hour_prices != (7.77,) * 24  # type: ignore[union-attr]
    frozen.shift(timedelta(seconds=1))  # after the first version's start

    price_plan_create(pool=pool, by="test", price_per_card_hour=Decimal("7.77"), time_of_use={"peak": Decimal("1")})

    assert _snapshot_of(pool).hour_prices == (7.77,) * 24  # type: ignore[union-attr]
    assert pool_snapshots(now=timezone.now()) == _read_from_the_rows(timezone.now())
    placement = quote(requirements=Requirements(cards=1, duration_hours=1, workload="training", pool=pool.pk))
    assert placement.placements[0].estimated_cost == pytest.approx(7.77)


@COMMITTED
def test_a_future_price_version_is_seen_when_it_takes_effect(market, frozen) -> None:
    pool = market[4]
    tomorrows = PricePlan.objects.filter(pool=pool).latest("effective_from")
    assert tomorrows.effective_from > timezone.now()
    expected = tuple(float(price) for price in tomorrows.hour_prices)
    assert _snapshot_of(pool).hour_prices != expected  # type: ignore[union-attr]

    frozen.shift(timedelta(days=1, minutes=1))  # no write: the clock alone
    now = timezone.now()

    assert _snapshot_of(pool).hour_prices == expected  # type: ignore[union-attr]
    assert pool_snapshots(now=now) == _read_from_the_rows(now)


@COMMITTED
def test_capacity_taken_by_another_transaction_is_seen_at_once(market) -> None:
    pool = market[4]
    assert _snapshot_of(pool).free_cards == 300  # type: ignore[union-attr]
    wanted = Requirements(cards=200, duration_hours=1, workload="training", pool=pool.pk)
    assert quote(requirements=wanted).placements

    pool_reserve_cards(pool=pool, cards=120)  # its own transaction, committed

    assert _snapshot_of(pool).free_cards == 180  # type: ignore[union-attr]
    result = quote(requirements=wanted)
    assert (result.placements, result.rejections) == ([], {pool.pk: "free_cards"})


@COMMITTED
def test_a_heartbeat_going_stale_is_seen_with_the_clock_alone(market, frozen, settings) -> None:
    pool = market[2]
    frozen.shift(timedelta(seconds=1))
    pool_heartbeat(pool=pool, healthy_cards=40, observed_at=timezone.now())
    assert _snapshot_of(pool).stale is False  # type: ignore[union-attr]
    assert _snapshot_of(pool).stale is False  # type: ignore[union-attr]  # the kept list

    frozen.shift(timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS + 1))  # no write at all

    assert _snapshot_of(pool).stale is True  # type: ignore[union-attr]
    result = quote(requirements=Requirements(cards=1, duration_hours=1, workload="training", pool=pool.pk))
    assert result.rejections == {pool.pk: "stale"}
    pool_heartbeat(pool=pool, healthy_cards=40, observed_at=timezone.now())
    assert _snapshot_of(pool).stale is False  # type: ignore[union-attr]


@COMMITTED
def test_a_later_price_version_written_after_the_list_is_seen_when_it_takes_effect(market, frozen) -> None:
    # The list is kept and only the pool written is looked at again: its new version must end the
    # kept list at its start, though no other pool's does.
    pool = market[0]
    assert pool_snapshots(now=timezone.now()) == _read_from_the_rows(timezone.now())
    starts = timezone.now() + timedelta(seconds=60)  # before any heartbeat goes stale, which would end it too
    later = price_plan_create(pool=pool, by="test", price_per_card_hour=Decimal("3.33"), effective_from=starts)
    expected = tuple(float(price) for price in later.hour_prices)
    assert _snapshot_of(pool).hour_prices != expected  # type: ignore[union-attr]

    frozen.shift(timedelta(seconds=61))  # no write: the clock alone

    assert _snapshot_of(pool).hour_prices == expected  # type: ignore[union-attr]
    assert pool_snapshots(now=timezone.now()) == _read_from_the_rows(timezone.now())


@COMMITTED
def test_after_one_pool_is_written_the_others_still_go_stale_with_the_clock(market, frozen, settings) -> None:
    # The first heartbeat ends the kept list; a later write to another pool must not move that end.
    first, second = market[0], market[1]
    frozen.shift(timedelta(seconds=1))
    pool_heartbeat(pool=first, healthy_cards=40, observed_at=timezone.now())
    assert pool_snapshots(now=timezone.now()) == _read_from_the_rows(timezone.now())
    frozen.shift(timedelta(seconds=30))
    pool_heartbeat(pool=second, healthy_cards=4, observed_at=timezone.now())
    assert _snapshot_of(second).stale is False  # type: ignore[union-attr]

    frozen.shift(timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS - 29))  # no write at all

    assert _snapshot_of(first).stale is True  # type: ignore[union-attr]
    assert _snapshot_of(second).stale is False  # type: ignore[union-attr]
    assert pool_snapshots(now=timezone.now()) == _read_from_the_rows(timezone.now())
    frozen.shift(timedelta(seconds=30))
    assert _snapshot_of(second).stale is True  # type: ignore[union-attr]


@COMMITTED
def test_each_write_to_a_pool_is_seen_by_the_next_quote_and_the_list_stays_in_id_order(market) -> None:
    pools = market[:4]
    for cards, pool in enumerate(pools, start=1):
        pool_reserve_cards(pool=pool, cards=cards)  # each its own transaction, one pool read again

        now = timezone.now()
        assert pool_snapshots(now=now) == _read_from_the_rows(now)
    made = pool_factory(name="made after the list", cards=4)  # a pool the list did not hold

    now = timezone.now()
    assert pool_snapshots(now=now) == _read_from_the_rows(now)
    assert _snapshot_of(made) is not None


@COMMITTED
def test_a_suspended_pool_leaves_at_once(market) -> None:
    pool = market[3]
    assert _snapshot_of(pool) is not None

    pool_suspend(pool=pool, by="operator", reason="maintenance")

    assert _snapshot_of(pool) is None


@COMMITTED
def test_a_deposit_appearing_is_quoted_at_once(market, frozen) -> None:
    pool = pool_factory(name="bank later", cards=4, price_per_card_hour=Decimal("11"))
    held = _book_reserved(pool, cards=4)
    wanted = Requirements(cards=2, duration_hours=1, workload="training", pool=pool.pk)
    assert quote(requirements=wanted).rejections == {pool.pk: "free_cards"}

    deposit_create(lease=held, depositor=held.buyer, cards=4, start_at=_this_hour(), by="holder")

    assert quote(requirements=wanted).placements


@pytest.mark.django_db(transaction=True)
def test_outside_a_writing_transaction_the_kept_list_ends_with_a_heartbeat_going_stale(settings) -> None:
    """As in a server, where the list is kept between calls: staleness needs no write."""
    with time_machine.travel(PEAK, tick=False) as traveller:
        pool = pool_factory(name="goes quiet")
        assert _snapshot_of(pool).stale is False  # type: ignore[union-attr]
        assert _snapshot_of(pool).stale is False  # type: ignore[union-attr]  # the kept list

        traveller.shift(timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS + 1))

        assert _snapshot_of(pool).stale is True  # type: ignore[union-attr]


def test_a_quotes_reserved_cost_uses_the_version_the_dispatcher_priced(market, buyer_client) -> None:
    pool = market[2]  # reserved_discount 0.333
    body = {"gpu_model": "A100-80G", "cards": 1, "workload": "training", "duration_hours": "1", "pool": str(pool.pk)}

    placement = buyer_client.post("/api/v1/quotes/", body, format="json").json()["placements"][0]

    reserved, on_demand = Decimal(placement["reserved_estimated_cost"]), Decimal(placement["estimated_cost"])
    assert abs(reserved - on_demand * Decimal("0.667")) <= Decimal("0.01")
