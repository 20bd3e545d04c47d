from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from pools.models import GpuModel, Hub
from pools.selectors import price_plan_at
from pools.services import price_plan_create
from pools.tariffs import default_factors, hour_bands, local_hour, next_cheaper_window
from tests.factories import pool_factory


def shanghai(hour: int, minute: int = 0, second: int = 0, day: int = 10) -> datetime:
    """A UTC instant given as Asia/Shanghai wall-clock time (UTC+8) on 2026-03-``day``."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC) - timedelta(hours=8)


def test_local_hour_is_read_in_asia_shanghai() -> None:
    assert local_hour(datetime(2026, 3, 9, 23, 30, tzinfo=UTC)) == 7
    assert local_hour(datetime(2026, 3, 10, 15, 59, tzinfo=UTC)) == 23


@pytest.mark.django_db
def test_every_hub_tariff_covers_each_local_hour_exactly_once() -> None:
    for hub in Hub.objects.all():
        assert len(hour_bands(hub.tariff)) == 24


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("when", "band"),
    [
        (shanghai(6, 59, 59), "valley"),
        (shanghai(7), "flat"),
        (shanghai(9, 59, 59), "flat"),
        (shanghai(10), "peak"),
        (shanghai(22, 59, 59), "flat"),
        (shanghai(23), "valley"),
        (shanghai(0), "valley"),
    ],
)
def test_rates_change_exactly_at_the_band_edges_in_shanghai_time(when: datetime, band: str) -> None:
    pool = pool_factory(hub_id="jingjinji", province="Beijing", price_per_card_hour=Decimal("20.0000"))
    plan = pool.price_plans.get()
    tariff_bands = hour_bands(pool.hub.tariff)
    by_band = {tariff_bands[hour]: Decimal(plan.hour_prices[hour]) for hour in range(24)}

    assert tariff_bands[local_hour(when)] == band
    assert plan.rate_at(when) == by_band[band]


@pytest.mark.django_db
def test_default_time_of_use_passes_the_electricity_cost_through() -> None:
    hub = Hub.objects.get(code="ningxia")
    gpu = GpuModel.objects.get(code="H100-80G")
    pool = pool_factory(hub_id="ningxia", province="Ningxia", gpu_model=gpu, pue=Decimal("1.20"))
    plan = pool.price_plans.get()
    prices = {band["band"]: Decimal(str(band["price"])) for band in hub.tariff["bands"]}
    bands = hour_bands(hub.tariff)
    rate = {bands[hour]: Decimal(plan.hour_prices[hour]) for hour in range(24)}

    # A card draws power_watts at the pool's PUE: that is what each band's price passes on.
    kwh_per_card_hour = Decimal(gpu.power_watts) / 1000 * Decimal("1.20")
    assert rate["flat"] == Decimal("15.0000")
    assert rate["peak"] - rate["flat"] == pytest.approx(
        (prices["peak"] - prices["flat"]) * kwh_per_card_hour, abs=Decimal("0.0001")
    )
    assert rate["valley"] < rate["flat"] < rate["peak"]


def test_default_factors_never_go_below_the_floor() -> None:
    tariff = {
        "bands": [
            {"band": "flat", "hours": [[0, 12]], "price": "1"},
            {"band": "valley", "hours": [[12, 24]], "price": "0"},
        ]
    }

    factors = default_factors(tariff=tariff, base_price=Decimal("0.01"), power_watts=700, pue=Decimal("1.5"))

    assert factors == {"flat": Decimal(1), "valley": Decimal("0.1")}


def test_the_next_cheaper_window_wraps_past_midnight() -> None:
    prices = [Decimal(1)] * 7 + [Decimal(2)] * 16 + [Decimal(1)]  # cheap 23:00-07:00
    window = next_cheaper_window(prices, shanghai(20, 30))

    assert window is not None
    assert (window.start_at, window.end_at) == (shanghai(23), shanghai(7, day=11))
    assert window.price_per_card_hour == Decimal(1)


def test_there_is_no_cheaper_window_in_the_cheapest_hours() -> None:
    prices = [Decimal(1)] * 7 + [Decimal(2)] * 17
    assert next_cheaper_window(prices, shanghai(3)) is None


@pytest.mark.django_db
def test_usage_is_rated_with_the_version_in_force_when_it_happened() -> None:
    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        pool = pool_factory(price_per_card_hour=Decimal("10.0000"), time_of_use=None)
        price_plan_create(
            pool=pool, by="test", price_per_card_hour=Decimal("8.0000"), effective_from=datetime(2026, 3, 5, tzinfo=UTC)
        )
    with time_machine.travel(datetime(2026, 3, 2, tzinfo=UTC), tick=False):
        price_plan_create(
            pool=pool, by="test", price_per_card_hour=Decimal("9.0000"), effective_from=datetime(2026, 3, 8, tzinfo=UTC)
        )

    def base_at(at: datetime) -> Decimal:
        plan = price_plan_at(pool_id=pool.pk, at=at)
        assert plan is not None
        return plan.price_per_card_hour

    assert base_at(datetime(2026, 3, 4, 23, 59, 59, tzinfo=UTC)) == Decimal("10")
    assert base_at(datetime(2026, 3, 5, tzinfo=UTC)) == Decimal("8")
    assert base_at(datetime(2026, 3, 8, tzinfo=UTC)) == Decimal("9")


@pytest.mark.django_db
def test_a_new_version_must_start_after_the_latest() -> None:
    from core.exceptions import ConflictError

    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        pool = pool_factory()
        price_plan_create(
            pool=pool, by="t", price_per_card_hour=Decimal(8), effective_from=datetime(2026, 3, 9, tzinfo=UTC)
        )
        with pytest.raises(ConflictError, match="must take effect after"):
            price_plan_create(
                pool=pool, by="t", price_per_card_hour=Decimal(7), effective_from=datetime(2026, 3, 5, tzinfo=UTC)
            )


@pytest.mark.django_db
def test_a_price_change_keeps_the_providers_own_time_of_use_factors() -> None:
    pool = pool_factory(time_of_use={"peak": Decimal("1.5"), "flat": Decimal(1), "valley": Decimal("0.5")})

    plan = price_plan_create(pool=pool, by="t", price_per_card_hour=Decimal("10"))

    assert plan.time_of_use_custom
    assert {Decimal(price) for price in plan.hour_prices} == {Decimal(15), Decimal(10), Decimal(5)}


@pytest.mark.django_db
def test_a_price_change_recomputes_the_default_pass_through_for_the_new_price() -> None:
    pool = pool_factory(price_per_card_hour=Decimal("15"))
    first = pool.price_plans.get()

    plan = price_plan_create(pool=pool, by="t", price_per_card_hour=Decimal("30"))

    assert not plan.time_of_use_custom
    # The same electricity cost difference is passed through at either price.
    assert Decimal(plan.hour_prices[3]) - Decimal(30) == pytest.approx(
        Decimal(first.hour_prices[3]) - Decimal(15), abs=Decimal("0.0001")
    )
