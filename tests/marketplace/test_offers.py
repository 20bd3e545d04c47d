from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from pools.models import GpuModel, PricePlan, ResourcePool
from pools.services import pool_heartbeat, pool_reserve_cards, price_plan_create
from tests.factories import ProviderFactory, pool_factory

pytestmark = pytest.mark.django_db

# 2026-03-10 11:00 in Asia/Shanghai: a peak hour of the Beijing hub's tariff.
PEAK = datetime(2026, 3, 10, 3, tzinfo=UTC)
# 2026-03-11 03:00 in Asia/Shanghai: valley at the east hubs' tariffs.
NIGHT = datetime(2026, 3, 10, 19, tzinfo=UTC)


@pytest.fixture
def frozen() -> Iterator[Any]:
    with time_machine.travel(PEAK, tick=False) as traveller:
        yield traveller


def ids(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.json()
    return [offer["pool"] for offer in response.json()["results"]]


def test_only_active_fresh_pools_with_free_cards_are_offered(frozen, buyer_client) -> None:
    offered = pool_factory(name="offered")
    pool_factory(name="pending", status=ResourcePool.Status.PENDING)
    pool_factory(name="suspended", status=ResourcePool.Status.SUSPENDED)
    pool_factory(name="never reported", last_heartbeat_at=None)
    full = pool_factory(name="full", cards=10)
    pool_reserve_cards(pool=full, cards=10)

    assert ids(buyer_client.get("/api/v1/offers/")) == [str(offered.pk)]


def test_a_pool_vanishes_when_its_heartbeat_goes_stale_and_returns_with_the_next(
    frozen, buyer_client, settings
) -> None:
    pool = pool_factory()
    assert ids(buyer_client.get("/api/v1/offers/")) == [str(pool.pk)]

    frozen.shift(timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS + 1))
    assert ids(buyer_client.get("/api/v1/offers/")) == []

    from django.utils import timezone

    pool_heartbeat(pool=pool, healthy_cards=100, observed_at=timezone.now())
    assert ids(buyer_client.get("/api/v1/offers/")) == [str(pool.pk)]


def test_offers_filter_by_model_hub_region_province_cards_price_and_green_share(frozen, buyer_client) -> None:
    h100_west = pool_factory(cards=64, green_share=Decimal("0.8"), price_per_card_hour=Decimal("14"))
    a100_east = pool_factory(
        hub_id="yangtze",
        province="Zhejiang",
        gpu_model=GpuModel.objects.get(code="A100-80G"),
        cards=8,
        green_share=Decimal("0.2"),
        price_per_card_hour=Decimal("9"),
    )
    h100_east = pool_factory(hub_id="jingjinji", province="Beijing", cards=256, green_share=Decimal("0.3"))

    def query(params: str) -> set[str]:
        return set(ids(buyer_client.get(f"/api/v1/offers/?{params}")))

    assert query("gpu_model=H100-80G") == {str(h100_west.pk), str(h100_east.pk)}
    assert query("hub=yangtze") == {str(a100_east.pk)}
    assert query("region=west") == {str(h100_west.pk)}
    assert query("province=Beijing") == {str(h100_east.pk)}
    assert query("min_free_cards=64") == {str(h100_west.pk), str(h100_east.pk)}
    assert query("min_green_share=0.5") == {str(h100_west.pk)}
    assert query("min_memory_gb=80&gpu_model=A100-80G") == {str(a100_east.pk)}
    assert query("max_price=10") == {str(a100_east.pk)}
    assert query("region=east&min_free_cards=100") == {str(h100_east.pk)}


def test_offers_order_by_price_now_green_share_and_latency(frozen, buyer_client) -> None:
    west = pool_factory(green_share=Decimal("0.9"), price_per_card_hour=Decimal("12"))
    shanghai = pool_factory(
        hub_id="yangtze", province="Shanghai", green_share=Decimal("0.1"), price_per_card_hour=Decimal("20")
    )
    beijing = pool_factory(
        hub_id="jingjinji", province="Beijing", green_share=Decimal("0.4"), price_per_card_hour=Decimal("16")
    )

    assert ids(buyer_client.get("/api/v1/offers/?ordering=price")) == [str(p.pk) for p in (west, beijing, shanghai)]
    assert ids(buyer_client.get("/api/v1/offers/?ordering=-price")) == [str(p.pk) for p in (shanghai, beijing, west)]
    assert ids(buyer_client.get("/api/v1/offers/?ordering=-green_share")) == [
        str(p.pk) for p in (west, beijing, shanghai)
    ]
    by_latency = buyer_client.get("/api/v1/offers/?user_region=shanghai&ordering=latency").json()["results"]
    assert by_latency[0]["pool"] == str(shanghai.pk)
    latencies = [offer["latency_ms"] for offer in by_latency]
    assert latencies == sorted(latencies)


@pytest.mark.parametrize("ordering", ["ordering=price,-green_share", "ordering=price&ordering=-green_share"])
def test_offers_sort_by_every_key_given_comma_separated_or_repeated(frozen, buyer_client, ordering: str) -> None:
    # given two pools at one price, the greener one made last, and a dearer one
    cheap_grey = pool_factory(green_share=Decimal("0.2"), price_per_card_hour=Decimal("12"))
    cheap_green = pool_factory(green_share=Decimal("0.8"), price_per_card_hour=Decimal("12"))
    dear = pool_factory(green_share=Decimal("0.9"), price_per_card_hour=Decimal("20"))

    # when the buyer sorts by price, then by green share, descending
    response = buyer_client.get(f"/api/v1/offers/?{ordering}")

    # then both keys count: cheapest first, and among equals the greener
    assert ids(response) == [str(p.pk) for p in (cheap_green, cheap_grey, dear)]


def test_a_repeated_ordering_with_an_unknown_key_is_a_400(frozen, buyer_client) -> None:
    response = buyer_client.get("/api/v1/offers/?ordering=price&ordering=random")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["ordering"][0]["code"] == "invalid_choice"


def test_ordering_by_latency_needs_a_user_region(frozen, buyer_client) -> None:
    response = buyer_client.get("/api/v1/offers/?ordering=latency")

    assert response.status_code == 400
    assert "user_region" in response.json()["error"]["message"] + str(response.json()["error"]["fields"])


@pytest.mark.parametrize(
    "params",
    [
        "max_price=cheap",
        "max_price=NaN",
        "min_free_cards=-3",
        "min_green_share=2",
        "region=north",
        "user_region=mars",
        "ordering=random",
    ],
)
def test_bad_offer_filters_are_a_400_not_a_500(frozen, buyer_client, params: str) -> None:
    pool_factory()

    response = buyer_client.get(f"/api/v1/offers/?{params}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_the_price_now_applies_time_of_use(buyer_client) -> None:
    with time_machine.travel(PEAK, tick=False):
        pool = pool_factory(hub_id="jingjinji", province="Beijing", price_per_card_hour=Decimal("20"))
        at_peak = buyer_client.get("/api/v1/offers/").json()["results"][0]
    with time_machine.travel(NIGHT, tick=False):
        pool_heartbeat(pool=pool, healthy_cards=100, observed_at=NIGHT)
        at_night = buyer_client.get("/api/v1/offers/").json()["results"][0]

    assert (at_peak["price_band"], at_night["price_band"]) == ("peak", "valley")
    assert Decimal(at_night["price_per_card_hour"]) < Decimal("20") < Decimal(at_peak["price_per_card_hour"])
    window = at_peak["next_cheaper_window"]
    assert Decimal(window["price_per_card_hour"]) < Decimal(at_peak["price_per_card_hour"])
    assert window["start_at"] > PEAK.isoformat().replace("+00:00", "Z")
    assert at_night["next_cheaper_window"] is None


def test_a_future_price_version_is_not_offered_before_it_takes_effect(frozen, buyer_client) -> None:
    pool = pool_factory(
        price_per_card_hour=Decimal("15"), time_of_use={"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}
    )
    price_plan_create(pool=pool, by="t", price_per_card_hour=Decimal("11"), effective_from=PEAK + timedelta(hours=2))

    now_price = buyer_client.get("/api/v1/offers/").json()["results"][0]["price_per_card_hour"]
    frozen.shift(timedelta(hours=2))
    pool_heartbeat(pool=pool, healthy_cards=100, observed_at=PEAK + timedelta(hours=2))
    later_price = buyer_client.get("/api/v1/offers/").json()["results"][0]["price_per_card_hour"]

    assert (Decimal(now_price), Decimal(later_price)) == (Decimal(15), Decimal(11))


def test_an_offer_shows_what_a_buyer_needs(frozen, buyer_client) -> None:
    provider = ProviderFactory(legal_name="West Cloud Co., Ltd.")
    pool = pool_factory(provider=provider, token_prices={"qwen3-72b": {"input": Decimal(1), "output": Decimal(4)}})

    offer = buyer_client.get("/api/v1/offers/?user_region=beijing").json()["results"][0]

    assert offer["pool"] == str(pool.pk)
    assert (offer["provider"], offer["provider_name"]) == (provider.slug, "West Cloud Co., Ltd.")
    assert (offer["hub"], offer["region"], offer["gpu_model"], offer["memory_gb"]) == (
        "ningxia",
        "west",
        "H100-80G",
        80,
    )
    assert (offer["free_cards"], offer["currency"]) == (100, "CNY")
    assert offer["token_prices"] == {"qwen3-72b": {"input": "1.0000", "output": "4.0000"}}
    assert isinstance(offer["latency_ms"], int)


@pytest.mark.parametrize("kind", ["provider", "issuer"])
def test_offers_are_for_buyers_and_operators(frozen, request, make_client, kind: str) -> None:  # type: ignore[no-untyped-def]
    response = make_client(request.getfixturevalue(kind)).get("/api/v1/offers/")

    assert response.status_code == 403


def _exact_prices(pool: ResourcePool, now: str, other: str) -> None:
    """Hour prices with ten places, as time-of-use factors and electricity make them: ``now``
    in the local hour of PEAK, ``other`` in the rest."""
    hours = [now if hour == 11 else other for hour in range(24)]  # PEAK is 11:00 in Shanghai
    PricePlan.objects.filter(pool=pool).update(
        hour_prices=hours, token_prices={"qwen3-72b": {"input": "1.2345500000", "output": "4.0000400000"}}
    )


def test_an_offer_shows_its_prices_with_four_places_rounded_half_up(frozen, buyer_client) -> None:
    pool = pool_factory()
    _exact_prices(pool, now="12.3456500000", other="8.0000500000")

    offer = buyer_client.get("/api/v1/offers/").json()["results"][0]

    assert offer["price_per_card_hour"] == "12.3457"
    assert offer["next_cheaper_window"]["price_per_card_hour"] == "8.0001"
    assert offer["token_prices"] == {"qwen3-72b": {"input": "1.2346", "output": "4.0000"}}
    assert PricePlan.objects.get(pool=pool).hour_prices[11] == "12.3456500000"  # exact inside
