"""The dispatcher as a pure function: filters, scores and the time shift."""

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from marketplace.dispatch import PoolSnapshot, Requirements, _cheapest_start, _curve, dispatch

# 2026-03-10 12:00 in Asia/Shanghai.
NOON = datetime(2026, 3, 10, 4, tzinfo=UTC)


def shanghai(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC) - timedelta(hours=8)


def flat(price: float) -> tuple[float, ...]:
    return (price,) * 24


def cheap_nights(day_price: float, night_price: float) -> tuple[float, ...]:
    """Cheap 23:00-07:00 local time, expensive otherwise."""
    return tuple(night_price if hour >= 23 or hour < 7 else day_price for hour in range(24))


def pool(pool_id: str, **changes) -> PoolSnapshot:  # type: ignore[no-untyped-def]
    base = PoolSnapshot(
        id=pool_id,
        provider_id="p",
        hub="yangtze",
        region="east",
        gpu_model="H100-80G",
        memory_gb=80,
        power_watts=700,
        free_cards=100,
        green_share=0.3,
        pue=1.25,
        stale=False,
        hour_prices=flat(20.0),
        tariff_kwh=flat(0.7),
        latency_ms={"shanghai": 3, "beijing": 15},
    )
    return replace(base, **changes)


def batch(**changes) -> Requirements:  # type: ignore[no-untyped-def]
    return replace(Requirements(cards=8, duration_hours=4, workload="training", gpu_model="H100-80G"), **changes)


def realtime(**changes) -> Requirements:  # type: ignore[no-untyped-def]
    req = Requirements(
        cards=2,
        duration_hours=1,
        workload="realtime_inference",
        gpu_model="H100-80G",
        user_region="shanghai",
        max_latency_ms=10,
    )
    return replace(req, **changes)


@pytest.mark.parametrize(
    ("snapshot", "req", "reason"),
    [
        (pool("a", gpu_model="A100-80G"), batch(), "gpu_model"),
        (pool("a", memory_gb=48, gpu_model="L40S"), batch(gpu_model=None, min_memory_gb=80), "memory"),
        (pool("a", free_cards=7), batch(), "free_cards"),
        (pool("a", hub="ningxia"), batch(allowed_hubs=frozenset({"yangtze"})), "hub_not_allowed"),
        (pool("a", latency_ms={"shanghai": 23}), realtime(max_latency_ms=20), "latency"),
        (pool("a", latency_ms={}), realtime(), "latency"),
        (pool("a", green_share=0.2), batch(min_green_share=0.5), "green_share"),
        (pool("a", hour_prices=flat(30.0)), batch(max_price=25.0), "price"),
        # Too dear says more than too small: a pool short of cards is still priced under a price cap.
        (pool("a", hour_prices=flat(30.0), free_cards=7), batch(max_price=25.0), "price"),
        (pool("a", hour_prices=flat(20.0), free_cards=7), batch(max_price=25.0), "free_cards"),
        (pool("a", stale=True), batch(), "stale"),
    ],
)
def test_each_filter_turns_a_pool_down_with_its_reason(snapshot: PoolSnapshot, req: Requirements, reason: str) -> None:
    result = dispatch(req, [snapshot], NOON)

    assert result.placements == []
    assert result.rejections == {"a": reason}


def test_a_pool_that_passes_every_filter_is_placed() -> None:
    result = dispatch(batch(min_memory_gb=80, min_green_share=0.2, max_price=25.0), [pool("a")], NOON)

    assert [p.allocations[0].pool_id for p in result.placements] == ["a"]
    assert result.placements[0].estimated_cost == pytest.approx(20.0 * 8 * 4)


def test_the_rejection_summary_counts_pools_per_reason() -> None:
    pools = [pool(f"full{i}", free_cards=1) for i in range(3)] + [pool("far", latency_ms={"shanghai": 40})]

    result = dispatch(realtime(cards=2, max_latency_ms=20), pools, NOON)

    assert (
        result.summary_text(realtime(max_latency_ms=20))
        == "3 pools: not enough free cards; 1 pools: latency over 20 ms"
    )


def test_the_cheapest_pool_over_the_run_ranks_first() -> None:
    result = dispatch(batch(), [pool("dear", hour_prices=flat(22.0)), pool("cheap", hour_prices=flat(18.0))], NOON)

    assert [p.allocations[0].pool_id for p in result.placements] == ["cheap", "dear"]


def test_a_snapshot_made_again_is_priced_from_its_own_facts_not_the_last_ones_kept() -> None:
    # What pricing a pool takes is kept per snapshot (dispatch._costs): a snapshot of the same pool
    # with another price, power, PUE, green share or reliability, even one made after the last is
    # gone (which may take its place in memory), is priced afresh.
    for price in (20.0, 10.0, 30.0):
        for power_watts, reliability in ((700, 1.0), (1400, 0.5)):
            snapshot = pool("a", hour_prices=flat(price), power_watts=power_watts, reliability=reliability)

            placement = dispatch(batch(), [snapshot], NOON).placements[0]

            assert placement.estimated_cost == price * 4 * 8
            assert placement.electricity_cost == pytest.approx(0.7 * power_watts / 1000 * 1.25 * 4 * 8)
            weight = (1 - 0.05 * 0.3) * (1 + 2.0 * (1 - reliability))
            assert placement.score == pytest.approx(
                8 * (price * 4 * weight + 30.0 * 0.7 * 4 * power_watts / 1000 * 1.25)
            )
            del snapshot, placement


def test_realtime_work_prefers_the_nearer_pool_at_equal_price() -> None:
    near = pool("near", latency_ms={"shanghai": 3})
    far = pool("far", latency_ms={"shanghai": 9})

    result = dispatch(realtime(), [far, near], NOON)

    assert result.placements[0].allocations[0].pool_id == "near"
    assert result.placements[0].latency_ms == 3


def test_realtime_work_starts_at_once_even_when_night_is_cheaper() -> None:
    result = dispatch(realtime(), [pool("a", hour_prices=cheap_nights(20.0, 5.0))], NOON)

    assert result.placements[0].start_at == NOON


def test_deferrable_work_shifts_into_the_cheap_window_before_its_deadline() -> None:
    night_pool = pool("a", hour_prices=cheap_nights(20.0, 5.0))
    req = batch(duration_hours=4, deadline=shanghai(11, 12))

    placement = dispatch(req, [night_pool], NOON).placements[0]

    assert shanghai(10, 23) <= placement.start_at <= shanghai(11, 3)
    assert placement.end_at <= shanghai(11, 7)
    assert placement.estimated_cost == pytest.approx(5.0 * 8 * 4)


def test_the_shift_never_runs_past_the_deadline() -> None:
    night_pool = pool("a", hour_prices=cheap_nights(20.0, 5.0))
    req = batch(duration_hours=4, deadline=shanghai(11, 1))  # only 2 cheap hours fit before it

    placement = dispatch(req, [night_pool], NOON).placements[0]

    assert placement.end_at == shanghai(11, 1)
    assert placement.estimated_cost == pytest.approx(8 * (2 * 20.0 + 2 * 5.0))


def test_the_time_shift_handles_windows_across_midnight_in_shanghai() -> None:
    # Cheap 22:00-02:00 local; the run of 3 hours fits within it.
    prices = tuple(2.0 if hour >= 22 or hour < 2 else 10.0 for hour in range(24))
    req = batch(duration_hours=3, earliest_start=shanghai(10, 20), deadline=shanghai(11, 10))

    placement = dispatch(req, [pool("a", hour_prices=prices)], NOON).placements[0]

    assert shanghai(10, 22) <= placement.start_at <= shanghai(10, 23)
    assert placement.estimated_cost == pytest.approx(2.0 * 8 * 3)


def test_deferrable_work_may_go_west_where_it_is_cheaper() -> None:
    east = pool("east", hour_prices=flat(20.0))
    west = pool("west", hub="ningxia", region="west", hour_prices=cheap_nights(16.0, 12.0), latency_ms={"shanghai": 23})

    placement = dispatch(batch(deadline=shanghai(11, 12)), [east, west], NOON).placements[0]

    assert (placement.hub, placement.region) == ("ningxia", "west")


def test_electricity_cost_follows_the_hub_tariff_of_each_hour_run() -> None:
    snapshot = pool("a", tariff_kwh=cheap_nights(1.0, 0.2), power_watts=1000, pue=1.5)

    day = dispatch(batch(duration_hours=2), [snapshot], NOON).placements[0]
    night = dispatch(batch(duration_hours=2, earliest_start=shanghai(11, 1)), [snapshot], NOON).placements[0]

    assert day.electricity_cost == pytest.approx(8 * 2 * 1.5 * 1.0)
    assert night.electricity_cost == pytest.approx(8 * 2 * 1.5 * 0.2)


def test_an_unreliable_provider_ranks_below_a_reliable_one_at_equal_price() -> None:
    result = dispatch(batch(), [pool("flaky", reliability=0.8), pool("solid", reliability=1.0)], NOON)

    assert [p.allocations[0].pool_id for p in result.placements] == ["solid", "flaky"]


def test_a_split_order_combines_the_cheapest_pools_of_one_hub() -> None:
    pools = [
        pool("a", free_cards=5, hour_prices=flat(10.0)),
        pool("b", free_cards=5, hour_prices=flat(11.0)),
        pool("c", free_cards=5, hour_prices=flat(30.0)),
        pool("other-hub", hub="ningxia", free_cards=5),
    ]

    placement = dispatch(batch(cards=8, split=True), pools, NOON).placements[0]

    assert {(a.pool_id, a.cards) for a in placement.allocations} == {("a", 5), ("b", 3)}
    assert placement.cards == 8
    assert placement.estimated_cost == pytest.approx(4 * (5 * 10.0 + 3 * 11.0))


def test_without_split_no_pool_too_small_is_combined() -> None:
    pools = [pool("a", free_cards=5), pool("b", free_cards=5)]

    result = dispatch(batch(cards=8), pools, NOON)

    assert result.placements == []
    assert set(result.rejections.values()) == {"free_cards"}


def test_max_latency_for_batch_work_is_ignored_with_a_warning() -> None:
    result = dispatch(batch(max_latency_ms=5, user_region="shanghai"), [pool("a", latency_ms={"shanghai": 40})], NOON)

    assert len(result.placements) == 1
    assert result.warnings == ["max_latency_ms is ignored for batch and training work."]


def _cheapest_start_by_trying_every_start(curve, earliest: float, latest: float, duration: float) -> float:  # type: ignore[no-untyped-def]
    """The dispatcher's cheapest start as it was computed before it was ranked by whole hours: every
    candidate start (the window's ends, and every start or end at a price change) tried on each call."""

    def changes_between(low: float, high: float):  # type: ignore[no-untyped-def]
        day = math.floor(low / 24) * 24
        while day <= high:
            for hour in sorted(curve.changes):
                if low < day + hour < high:
                    yield day + hour
            day += 24

    latest = min(latest, earliest + 24.0)
    starts = {earliest, latest}
    starts.update(changes_between(earliest, latest))
    starts.update(end - duration for end in changes_between(earliest + duration, latest + duration))
    return min(starts, key=lambda start: (curve.between(start, duration), start))


def test_the_cheapest_start_is_the_one_every_candidate_start_would_give() -> None:
    # Given random daily price curves (time-of-use steps, ties, flat), windows (fractional ends,
    # whole hours, longer than a day, empty, inverted) and durations,
    rng = random.Random(22)
    levels = [5.0, 7.25, 9.5, 9.5, 12.0, 20.125]
    curves = [_curve(flat(9.5)), _curve(cheap_nights(20.0, 9.0))]
    curves += [_curve(tuple(rng.choice(levels) for _ in range(24))) for _ in range(40)]
    cases = 0
    for _ in range(20_000):
        curve = rng.choice(curves)
        earliest = rng.choice([rng.uniform(0, 48), float(rng.randrange(48)), rng.randrange(48) + 0.5])
        latest = earliest + rng.choice([rng.uniform(-3, 40), float(rng.randrange(30)), 0.0])
        duration = rng.choice([rng.uniform(0.1, 30), float(rng.randrange(1, 30)), 2.5, 12.0])
        # when ranked by whole hours, then it is the start, of the same type, that trying every start gives
        found = _cheapest_start(curve, earliest, latest, duration)
        expected = _cheapest_start_by_trying_every_start(curve, earliest, latest, duration)
        assert (found, type(found)) == (expected, type(expected)), (curve.prices, earliest, latest, duration)
        cases += 1
    assert cases == 20_000
