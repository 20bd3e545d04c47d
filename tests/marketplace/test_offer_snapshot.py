"""The offers list served from the per-pool snapshot (marketplace.offers): the same answer as the
serializer over the SQL query it replaced, and every change that moves an offer seen at once."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from rest_framework.generics import ListAPIView
from rest_framework.test import APIRequestFactory

from marketplace.apis import OfferListApi
from marketplace.deposits import deposit_create, deposit_withdraw
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import order_place
from pools.models import GpuModel, PricePlan, ResourcePool
from pools.services import (
    pool_heartbeat,
    pool_release_cards,
    pool_reserve_cards,
    pool_suspend,
    price_plan_create,
)
from tests.factories import BuyerFactory, ProviderFactory, pool_factory

pytestmark = pytest.mark.django_db

# 2026-03-10 11:40 in Asia/Shanghai: a peak hour at the east hubs, with cheaper hours ahead.
PEAK = datetime(2026, 3, 10, 3, 40, tzinfo=UTC)


@pytest.fixture
def frozen() -> Iterator[Any]:
    with time_machine.travel(PEAK, tick=False) as traveller:
        yield traveller


class _SerializerOverQuery(OfferListApi):
    """The offers list as it was served before the snapshot: ``selectors.offers_list``
    filtered by ``OfferFilter`` in SQL, paginated, and ``OfferSerializer``."""

    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return ListAPIView.list(self, request, *args, **kwargs)


def _before(buyer_client: Any, path: str) -> Any:
    request = APIRequestFactory().get(path, HTTP_AUTHORIZATION=buyer_client._credentials["HTTP_AUTHORIZATION"])
    response = _SerializerOverQuery.as_view()(request)
    response.render()
    return response


@pytest.fixture
def market(frozen: Any) -> list[ResourcePool]:
    """Pools in several hubs, models, prices (ties included), green shares, time-of-use and token
    prices, a reserved discount; some not offered (suspended, stale, full, pending, a version only
    from tomorrow); one offered only for the cards deposited from its reserved booking (issue 19)."""
    provider, other = ProviderFactory(), ProviderFactory()
    a100 = GpuModel.objects.get(code="A100-80G")
    pools = [
        pool_factory(provider=provider, name="west cheap", price_per_card_hour=Decimal("9.5"), cards=64),
        pool_factory(provider=provider, name="west tie", price_per_card_hour=Decimal("9.5"), cards=8),
        pool_factory(
            provider=other,
            name="yangtze a100",
            hub_id="yangtze",
            province="Zhejiang",
            city="Hangzhou",
            gpu_model=a100,
            price_per_card_hour=Decimal("12.3456"),
            green_share=Decimal("0.125"),
            pue=Decimal("1.35"),
        ),
        pool_factory(
            provider=other,
            name="beijing custom tou",
            hub_id="jingjinji",
            province="Beijing",
            price_per_card_hour=Decimal("20"),
            time_of_use={"peak": Decimal("1.3"), "flat": Decimal("1"), "valley": Decimal("0.6")},
            token_prices={"qwen-72b": {"input": Decimal("2.5"), "output": Decimal("8")}},
            green_share=Decimal("0.9"),
        ),
        pool_factory(provider=other, name="guizhou", hub_id="guizhou", province="Guizhou", cards=300),
        pool_factory(name="suspended", status=ResourcePool.Status.SUSPENDED),
        pool_factory(name="pending", status=ResourcePool.Status.PENDING),
        pool_factory(name="stale", last_heartbeat_at=timezone.now() - timedelta(days=2)),
    ]
    full = pool_factory(name="full", cards=4)
    pool_reserve_cards(pool=full, cards=4)
    pool_reserve_cards(pool=pools[0], cards=10)
    price_plan_create(
        pool=pools[4], by="test", price_per_card_hour=Decimal("1"), effective_from=timezone.now() + timedelta(days=1)
    )
    PricePlan.objects.filter(pool=pools[2]).update(reserved_discount=Decimal("0.333"))  # rounded on the wire
    pools.append(pool_factory(provider=provider, name="banked", cards=8, price_per_card_hour=Decimal("15")))
    held = _book_reserved(pools[-1], cards=8)
    deposit_create(lease=held, depositor=held.buyer, cards=3, start_at=_this_hour(), by="holder")
    return pools


def _this_hour() -> datetime:
    return timezone.now().replace(minute=0, second=0, microsecond=0)


def _book_reserved(pool: ResourcePool, *, cards: int) -> Lease:
    """A reserved booking of the pool's cards from now for ten hours."""
    requirements = Requirements(
        cards=cards, duration_hours=10, workload="training", pool=pool.pk, commitment="reserved"
    )
    return order_place(buyer=BuyerFactory(), requirements=requirements).leases.get()


QUERIES = [
    "",
    "?ordering=price",
    "?ordering=-price",
    "?ordering=green_share,-price",
    "?ordering=-green_share&ordering=free_cards",
    "?ordering=-free_cards",
    "?user_region=shanghai&ordering=latency",
    "?user_region=beijing&ordering=-latency,price&max_price=30",
    "?user_region=chengdu",
    "?gpu_model=H100-80G&min_free_cards=8&ordering=price",
    "?region=west&max_price=10&ordering=price",
    "?region=east",
    "?hub=ningxia&min_green_share=0.5",
    "?province=Beijing",
    "?min_memory_gb=80&max_price=12.3456",
    "?min_green_share=0.125&page_size=2",
    "?page_size=2&page=2",
    "?page_size=2&page=last",
    "?gpu_model=nothing-like-it",
    "?min_free_cards=1",
    "?ordering=free_cards",
    # Refused alike: unknown parameters, bad values, latency without a region, a page out of range.
    "?staus=active",
    "?min_free_cards=0",
    "?max_price=",
    "?ordering=latency",
    "?region=north",
    "?page=9",
    "?page_size=0",
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_snapshot_answers_as_the_serializer_over_the_query_did(market, buyer_client, query) -> None:
    before = _before(buyer_client, f"/api/v1/offers/{query}")

    after = buyer_client.get(f"/api/v1/offers/{query}")

    assert after.status_code == before.status_code
    assert after.json() == json.loads(before.content)


def test_the_fixture_offers_what_it_should(market, buyer_client) -> None:
    body = buyer_client.get("/api/v1/offers/?page_size=100").json()

    assert sorted(offer["name"] for offer in body["results"]) == sorted(
        ["west cheap", "west tie", "yangtze a100", "beijing custom tou", "guizhou", "banked"]
    )
    assert any(offer["next_cheaper_window"] for offer in body["results"])
    assert any(offer["token_prices"] for offer in body["results"])
    by_name = {offer["name"]: offer for offer in body["results"]}
    assert (by_name["banked"]["free_cards"], by_name["banked"]["bank_cards"]) == (0, 3)
    assert by_name["yangtze a100"]["reserved_price_per_card_hour"] != by_name["yangtze a100"]["price_per_card_hour"]


# Each write commits before the next request, as in a server: the snapshot sees a change only
# through its pool's version (inside one test transaction it reads its own writes every time).
COMMITTED = pytest.mark.django_db(transaction=True)


def _offer(buyer_client: Any, pool: ResourcePool, query: str = "") -> dict[str, Any] | None:
    body = buyer_client.get(f"/api/v1/offers/?page_size=100{query}").json()
    return next((offer for offer in body["results"] if offer["pool"] == str(pool.pk)), None)


@COMMITTED
def test_a_price_change_shows_at_once(market, buyer_client, frozen) -> None:
    pool = market[1]
    assert _offer(buyer_client, pool)["price_per_card_hour"] != "7.7700"  # type: ignore[index]
    frozen.shift(timedelta(seconds=1))  # after the first version's start

    price_plan_create(pool=pool, by="test", price_per_card_hour=Decimal("7.77"), time_of_use={"peak": Decimal("1")})

    assert _offer(buyer_client, pool)["price_per_card_hour"] == "7.7700"  # type: ignore[index]
    assert _offer(buyer_client, pool, "&max_price=7.77") is not None


@COMMITTED
def test_a_future_price_version_shows_when_it_takes_effect(market, buyer_client, frozen) -> None:
    pool = market[4]
    assert Decimal(_offer(buyer_client, pool)["price_per_card_hour"]) > 10  # type: ignore[index]

    frozen.shift(timedelta(days=1, minutes=1))
    for each in ResourcePool.objects.exclude(status=ResourcePool.Status.PENDING):
        pool_heartbeat(pool=each, healthy_cards=each.healthy_cards, observed_at=timezone.now())

    assert Decimal(_offer(buyer_client, pool)["price_per_card_hour"]) < 2  # type: ignore[index]  # base 1, this hour's band


@COMMITTED
def test_a_capacity_change_shows_at_once(market, buyer_client) -> None:
    pool = market[4]
    assert _offer(buyer_client, pool)["free_cards"] == 300  # type: ignore[index]

    pool_reserve_cards(pool=pool, cards=120)
    assert _offer(buyer_client, pool)["free_cards"] == 180  # type: ignore[index]
    assert _offer(buyer_client, pool, "&min_free_cards=200") is None

    pool_release_cards(pool=pool, cards=20)
    assert _offer(buyer_client, pool)["free_cards"] == 200  # type: ignore[index]

    pool_reserve_cards(pool=pool, cards=200)
    assert _offer(buyer_client, pool) is None  # full


@COMMITTED
def test_a_heartbeat_shows_at_once_and_its_staleness_with_the_clock(market, buyer_client, frozen, settings) -> None:
    pool = market[2]
    frozen.shift(timedelta(seconds=1))
    pool_heartbeat(pool=pool, healthy_cards=40, observed_at=timezone.now())
    assert _offer(buyer_client, pool)["free_cards"] == 40  # type: ignore[index]

    frozen.shift(timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS + 1))
    assert _offer(buyer_client, pool) is None  # stale, with no write at all

    pool_heartbeat(pool=pool, healthy_cards=100, observed_at=timezone.now())
    offer = _offer(buyer_client, pool)
    assert offer is not None
    assert offer["last_heartbeat_at"] == timezone.now().isoformat().replace("+00:00", "Z")


@COMMITTED
def test_a_providers_new_name_shows_at_once(market, buyer_client) -> None:
    pool = market[2]
    assert _offer(buyer_client, pool)["provider_name"] != "Renamed Compute Co."  # type: ignore[index]
    provider = pool.provider
    provider.legal_name = "Renamed Compute Co."
    provider.save()

    assert _offer(buyer_client, pool)["provider_name"] == "Renamed Compute Co."  # type: ignore[index]


@COMMITTED
def test_a_suspended_pool_leaves_the_offers_at_once(market, buyer_client) -> None:
    pool = market[3]
    assert _offer(buyer_client, pool) is not None

    pool_suspend(pool=pool, by="operator", reason="maintenance")

    assert _offer(buyer_client, pool) is None


@pytest.mark.django_db(transaction=True)
def test_a_change_committed_by_another_transaction_is_seen(make_client) -> None:
    """As in a server: the change is another transaction's, committed before the next request."""
    client = make_client(BuyerFactory())
    pool = pool_factory(name="committed")
    assert _offer(client, pool)["free_cards"] == 100  # type: ignore[index]

    pool_reserve_cards(pool=pool, cards=30)  # its own transaction, committed

    assert _offer(client, pool)["free_cards"] == 70  # type: ignore[index]


@pytest.mark.django_db(transaction=True)
def test_outside_a_writing_transaction_the_clock_alone_ends_a_stale_pools_offer(make_client, settings) -> None:
    """As in a server, where the selection is kept between requests: staleness needs no write."""
    client = make_client(BuyerFactory())
    with time_machine.travel(PEAK, tick=False) as traveller:
        pool = pool_factory(name="goes quiet")
        assert _offer(client, pool) is not None
        assert _offer(client, pool) is not None  # the kept selection

        traveller.shift(timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS + 1))

        assert _offer(client, pool) is None


@COMMITTED
def test_deposited_cards_show_at_once_and_leave_with_the_deposits_hours(market, buyer_client, frozen) -> None:
    """Deposits are read per request: a deposit, a resale on it and a withdrawal show at once, and
    a withdrawn deposit's cards leave at its new end with no write at all."""
    pool = pool_factory(name="bank later", cards=4, price_per_card_hour=Decimal("11"))
    held = _book_reserved(pool, cards=4)
    assert _offer(buyer_client, pool) is None  # full, nothing deposited

    deposit = deposit_create(lease=held, depositor=held.buyer, cards=4, start_at=_this_hour(), by="holder")
    assert _offer(buyer_client, pool)["bank_cards"] == 4  # type: ignore[index]

    requirements = Requirements(cards=1, duration_hours=1, workload="training", pool=pool.pk)
    resale = order_place(buyer=BuyerFactory(), requirements=requirements).leases.get()
    assert resale.deposit_id == deposit.pk
    assert _offer(buyer_client, pool)["bank_cards"] == 3  # type: ignore[index]

    deposit = deposit_withdraw(deposit=deposit, by="holder")  # its end moves back to the resale's end
    assert deposit.end_at == resale.end_at
    assert _offer(buyer_client, pool)["bank_cards"] == 3  # type: ignore[index]
    frozen.move_to(deposit.end_at - timedelta(minutes=1))
    pool_heartbeat(pool=pool, healthy_cards=4, observed_at=timezone.now())  # fresh
    assert _offer(buyer_client, pool)["bank_cards"] == 3  # type: ignore[index]
    frozen.move_to(deposit.end_at + timedelta(seconds=1))  # still fresh
    assert _offer(buyer_client, pool) is None
