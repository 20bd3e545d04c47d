"""The compute price index: hourly snapshots of the active offers, and their quantiles weighted by
free cards per hub, region and nation, equal to a plain computation over the rows (issue 17, point 4)."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from marketplace.models import PriceIndexSnapshot
from marketplace.services import price_index_snapshot
from pools.models import GpuModel, Hub, ResourcePool
from tests.factories import pool_factory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 1, 20, tzinfo=UTC)


def weighted_quantile(pairs: list[tuple[Decimal, int]], share: Decimal) -> Decimal:
    """The lowest price at which at least ``share`` of the cards is offered."""
    total = sum(cards for _, cards in pairs)
    running = 0
    for price, cards in sorted(pairs):
        running += cards
        if running >= share * total:
            return price
    raise AssertionError("no cards")


def pairs_of(row: PriceIndexSnapshot, hubs: set[str]) -> list[tuple[Decimal, int]]:
    return [(Decimal(price), cards) for hub, pairs in row.offers.items() if hub in hubs for price, cards in pairs]


def expected(rows: list[PriceIndexSnapshot], hubs: set[str]) -> dict[tuple[str, datetime], dict[str, Any]]:
    pairs: dict[tuple[str, datetime], list[tuple[Decimal, int]]] = defaultdict(list)
    for row in rows:
        if pairs_of(row, hubs):
            pairs[(row.gpu_model_id, row.hour)] += pairs_of(row, hubs)
    return {
        key: {
            "p10": weighted_quantile(values, Decimal("0.1")),
            "median": weighted_quantile(values, Decimal("0.5")),
            "p90": weighted_quantile(values, Decimal("0.9")),
            "cards": sum(cards for _, cards in values),
        }
        for key, values in pairs.items()
    }


@pytest.fixture
def market(provider) -> None:
    """Offers of two GPU models in an eastern and a western hub, snapshotted over three hours."""
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        for hub, province, price, cards in [
            ("jingjinji", "Beijing", "20", 10),
            ("jingjinji", "Beijing", "24", 30),
            ("jingjinji", "Beijing", "30", 5),
            ("ningxia", "Ningxia", "12", 40),
            ("ningxia", "Ningxia", "14", 8),
        ]:
            pool_factory(
                provider=provider, hub_id=hub, province=province, cards=cards, price_per_card_hour=Decimal(price),
            )  # fmt: skip
        pool_factory(
            provider=provider,
            cards=7,
            price_per_card_hour=Decimal("9"),
            gpu_model=GpuModel.objects.get(code="A100-80G"),
        )
    for hours in range(3):
        with time_machine.travel(NOW + timedelta(hours=hours), tick=False):
            ResourcePool.objects.update(last_heartbeat_at=NOW + timedelta(hours=hours))
            price_index_snapshot()


def test_a_snapshot_holds_each_price_and_its_free_cards_per_model_and_hub(market) -> None:
    row = PriceIndexSnapshot.objects.get(hour=NOW.replace(minute=0), gpu_model_id="H100-80G")

    assert [cards for _, cards in row.offers["ningxia"]] == [40, 8]
    assert [cards for _, cards in row.offers["jingjinji"]] == [10, 30, 5]
    assert set(row.index) == {"jingjinji", "ningxia", "east", "west", "national"}
    assert PriceIndexSnapshot.objects.count() == 2 * 3  # (H100, A100) x 3 hours


def test_a_second_snapshot_in_the_same_hour_changes_nothing(market) -> None:
    with time_machine.travel(NOW + timedelta(minutes=30), tick=False):
        assert price_index_snapshot() == 0

    assert PriceIndexSnapshot.objects.count() == 6


@pytest.mark.parametrize("area", ["national", "east", "west", "jingjinji"])
def test_the_index_equals_a_plain_computation_over_the_snapshot_rows(market, buyer_client, area) -> None:
    hubs = {
        "national": set(Hub.objects.values_list("code", flat=True)),
        "east": set(Hub.objects.filter(region="east").values_list("code", flat=True)),
        "west": set(Hub.objects.filter(region="west").values_list("code", flat=True)),
        "jingjinji": {"jingjinji"},
    }[area]
    want = expected(list(PriceIndexSnapshot.objects.all()), hubs)
    query = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T06:00:00Z"}
    query["hub" if area == "jingjinji" else "region"] = area

    with time_machine.travel(NOW + timedelta(hours=3), tick=False):
        body = buyer_client.get("/api/v1/price-index/", query).json()

    got = {
        (series["gpu_model"], datetime.fromisoformat(point["at"])): {
            "p10": Decimal(point["p10"]), "median": Decimal(point["median"]), "p90": Decimal(point["p90"]),
            "cards": point["cards"],
        }
        for series in body["series"] for point in series["points"]
    }  # fmt: skip
    assert got == {key: {**value, **_shown(value)} for key, value in want.items()}
    assert all(series["area"] == area for series in body["series"])
    assert len(got) == len(want) > 0


def _shown(value: dict[str, Any]) -> dict[str, Decimal]:
    return {name: value[name].quantize(Decimal("0.0001")) for name in ("p10", "median", "p90")}


def test_a_day_merges_its_hours_and_gives_the_average_cards(market, operator, make_client) -> None:
    rows = list(PriceIndexSnapshot.objects.filter(gpu_model_id="H100-80G"))
    want = expected(rows, {"jingjinji", "ningxia"})
    pairs = [pair for row in rows for pair in pairs_of(row, {"jingjinji", "ningxia"})]

    with time_machine.travel(NOW + timedelta(hours=3), tick=False):
        body = (
            make_client(operator)
            .get(
                "/api/v1/price-index/", {"gpu_model": "H100-80G", "granularity": "day", "from": "2026-03-01T00:00:00Z"}
            )
            .json()
        )

    ((point,),) = [series["points"] for series in body["series"]]
    assert Decimal(point["median"]) == weighted_quantile(pairs, Decimal("0.5")).quantize(Decimal("0.0001"))
    assert point["cards"] == sum(value["cards"] for value in want.values()) // 3
    assert point["at"] == "2026-03-01T16:00:00Z"  # the local day (Asia/Shanghai) of March 2


def test_every_kind_of_key_sees_the_same_index(market, buyer, provider, operator, issuer, make_client) -> None:
    with time_machine.travel(NOW + timedelta(hours=3), tick=False):
        bodies = [
            make_client(organization).get("/api/v1/price-index/").json()
            for organization in (buyer, provider, operator, issuer)
        ]

    assert bodies[0] == bodies[1] == bodies[2] == bodies[3]
    assert bodies[0]["series"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"gpu_model": "nope"}, "gpu_model"),
        ({"hub": "atlantis"}, "hub"),
        ({"hub": "jingjinji", "region": "east"}, "region"),
        ({"granularity": "minute"}, "granularity"),
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ({"cards": "8"}, "cards"),
    ],
)
def test_bad_queries_are_refused_with_the_field_at_fault(buyer_client, query, field) -> None:
    response = buyer_client.get("/api/v1/price-index/", query)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_the_index_needs_a_key(client) -> None:
    assert client.get("/api/v1/price-index/").status_code == 401
