"""Reserved capacity in the market: quotes and offers show both prices, deferred bookings hold their
cards from their start and a pool's capacity calendar refuses an overlapping booking, deposited
card-hours are offered again and taken by exactly as many orders as they hold (issue 19, points 1,
2 and 6)."""

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from core.exceptions import RuleViolation
from marketplace.capacity import _peak, calendar_fits
from marketplace.deposits import deposit_create
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_extend, lease_start, order_cancel, order_place
from pools.models import PricePlan, ResourcePool
from pools.services import price_plan_create
from tests.factories import BuyerFactory, pool_factory
from tests.threads import run_concurrently

H = timedelta(hours=1)


def small_pool(provider: Any, cards: int = 8) -> ResourcePool:
    pool = pool_factory(provider=provider, cards=cards, price_per_card_hour=Decimal(20))
    PricePlan.objects.filter(pool=pool).update(reserved_discount=Decimal("0.25"))
    return pool


def place(
    buyer: Any, pool: ResourcePool, *, cards: int, hours: float, commitment: str = "on_demand", start: Any = None
):  # type: ignore[no-untyped-def]
    requirements = Requirements(
        cards=cards,
        duration_hours=hours,
        workload="training",
        pool=pool.pk,
        commitment=commitment,
        earliest_start=start,
    )
    return order_place(buyer=buyer, requirements=requirements).leases.get()


def whole_hour(hours: int) -> Any:
    return timezone.now().replace(minute=0, second=0, microsecond=0) + hours * H


@pytest.mark.django_db
def test_a_deferred_booking_holds_its_cards_from_its_start_not_from_ordering(buyer, provider) -> None:
    pool = small_pool(provider)
    start = whole_hour(5)

    lease = place(buyer, pool, cards=8, hours=3, start=start)

    pool.refresh_from_db()
    assert (lease.holding, pool.reserved_cards, pool.free_cards) == (False, 0, 8)
    other = place(BuyerFactory(), pool, cards=8, hours=2)  # fits before the booking starts
    assert other.holding
    Lease.objects.filter(pk=other.pk).update(status=Lease.Status.COMPLETED, ended_at=timezone.now())
    ResourcePool.objects.filter(pk=pool.pk).update(reserved_cards=0)
    lease_start(lease_id=lease.pk, by="provider", now=start)
    pool.refresh_from_db()
    assert pool.reserved_cards == 8


@pytest.mark.django_db
def test_the_calendar_refuses_a_booking_that_overlaps_a_future_one_beyond_the_pools_cards(buyer, provider) -> None:
    pool = small_pool(provider)
    place(buyer, pool, cards=6, hours=3, start=whole_hour(5))
    second = BuyerFactory()

    with pytest.raises(RuleViolation) as deferred:
        place(second, pool, cards=3, hours=1, start=whole_hour(6))
    with pytest.raises(RuleViolation) as now:
        place(second, pool, cards=3, hours=6)  # free now, but runs into the booking

    assert deferred.value.code == now.value.code == "pool_rejected"
    assert place(second, pool, cards=2, hours=1, start=whole_hour(6)).cards == 2  # 6 + 2 fit in 8
    assert place(second, pool, cards=8, hours=4).cards == 8  # ends before the booking starts
    assert Lease.objects.filter(pool=pool).count() == 3


@pytest.mark.django_db
def test_a_quote_and_the_offers_show_the_reserved_price_beside_the_on_demand_one(buyer_client, provider) -> None:
    pool = small_pool(provider)
    price_plan_create(pool=pool, by="provider", reserved_discount=Decimal("0.3"))
    body = {
        "cards": 2,
        "duration_hours": "3",
        "workload": "training",
        "gpu_model": pool.gpu_model_id,
        "pool": str(pool.pk),
    }

    quote = buyer_client.post("/api/v1/quotes/", body, format="json").json()["placements"][0]
    offers = buyer_client.get("/api/v1/offers/", {"gpu_model": pool.gpu_model_id}).json()["results"]

    assert Decimal(quote["reserved_estimated_cost"]) == (Decimal(quote["estimated_cost"]) * Decimal("0.7")).quantize(
        Decimal("0.01")
    )
    (offer,) = [offer for offer in offers if offer["pool"] == str(pool.pk)]
    assert Decimal(offer["reserved_price_per_card_hour"]) == Decimal(offer["price_per_card_hour"]) * Decimal("0.7")
    assert offer["bank_cards"] == 0


@pytest.mark.django_db
def test_deposited_cards_are_offered_as_bank_capacity_and_ordered_through_the_api(buyer_client, provider) -> None:
    pool = small_pool(provider)
    held = place(buyer_client.organization, pool, cards=8, hours=10, commitment="reserved")
    start = whole_hour(0)
    answer = buyer_client.post(
        f"/api/v1/leases/{held.pk}/deposits/", {"cards": 3, "start_at": start.isoformat()}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    assert answer.json()["hours_deposited"] == str(Decimal(3 * 10).quantize(Decimal("0.01")))

    offers = buyer_client.get("/api/v1/offers/", {"gpu_model": pool.gpu_model_id}).json()["results"]
    (offer,) = [offer for offer in offers if offer["pool"] == str(pool.pk)]
    assert (offer["free_cards"], offer["bank_cards"]) == (0, 3)
    resale = place(BuyerFactory(), pool, cards=3, hours=1)
    assert str(resale.deposit_id) == answer.json()["id"]
    listed = buyer_client.get("/api/v1/bank/deposits/").json()["results"]
    assert [row["id"] for row in listed] == [answer.json()["id"]]
    assert (listed[0]["hours_resold"], listed[0]["earned"]) == ("0.00", "0.00")  # nothing billed yet


@pytest.mark.django_db
def test_a_deposit_is_refused_for_an_on_demand_lease_and_beyond_the_leases_cards(buyer_client, provider) -> None:
    pool = small_pool(provider, cards=20)
    on_demand = place(buyer_client.organization, pool, cards=2, hours=5)
    reserved = place(buyer_client.organization, pool, cards=4, hours=5, commitment="reserved")
    start = whole_hour(1).isoformat()

    refused = [
        buyer_client.post(f"/api/v1/leases/{on_demand.pk}/deposits/", {"cards": 1, "start_at": start}, format="json"),
        buyer_client.post(f"/api/v1/leases/{reserved.pk}/deposits/", {"cards": 5, "start_at": start}, format="json"),
        buyer_client.post(
            f"/api/v1/leases/{reserved.pk}/deposits/",
            {"cards": 1, "start_at": (whole_hour(1) + timedelta(minutes=7)).isoformat()},
            format="json",
        ),
        buyer_client.post(
            f"/api/v1/leases/{reserved.pk}/deposits/", {"cards": 1, "start_at": start, "price": "25"}, format="json"
        ),
    ]

    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [
        (422, "lease_not_reserved"),
        (422, "too_many_cards"),
        (422, "not_whole_hour"),
        (422, "price_not_lower"),
    ]
    assert not reserved.deposits.exists()


@pytest.mark.django_db(transaction=True)
def test_buyers_racing_for_the_last_deposited_cards_get_exactly_the_cards_deposited(provider) -> None:
    pool = small_pool(provider)
    holder = BuyerFactory()
    held = place(holder, pool, cards=8, hours=10, commitment="reserved")
    deposit_create(lease=held, depositor=holder, cards=4, start_at=whole_hour(0), by="holder")
    buyers = [BuyerFactory() for _ in range(10)]
    placed: list[Any] = []
    refused: list[str] = []

    def buy(buyer: Any) -> None:
        try:
            placed.append(place(buyer, pool, cards=1, hours=1))
        except RuleViolation as error:
            refused.append(error.code)

    run_concurrently([lambda buyer=buyer: buy(buyer) for buyer in buyers])

    assert len(placed) == 4 and len(refused) == 6
    assert set(refused) == {"pool_rejected"}
    assert Lease.objects.filter(deposit__lease=held).count() == 4
    pool.refresh_from_db()
    assert pool.reserved_cards == 8  # the resales took no cards of the pool's own


@pytest.mark.django_db
def test_an_extension_into_hours_another_order_booked_is_refused_by_the_calendar(buyer, provider) -> None:
    pool = small_pool(provider)
    running = place(buyer, pool, cards=5, hours=2)
    place(BuyerFactory(), pool, cards=4, hours=2, start=whole_hour(4))

    with pytest.raises(RuleViolation) as refused:
        lease_extend(lease=running, end_at=whole_hour(5), by="buyer")

    assert refused.value.code == "calendar_full"
    assert lease_extend(lease=running, end_at=whole_hour(3), by="buyer").end_at == whole_hour(3)  # before it


@pytest.mark.django_db
def test_the_calendar_finds_the_most_cards_booked_at_once_as_the_windows_say(buyer, provider) -> None:
    """calendar_fits sums the peak in SQL: checked against ``_peak`` over the same leases, with
    windows that touch (one ends as another starts), overlap, nest and are cancelled, for booking
    windows that cut through them anywhere (whole and half hours)."""
    pool = pool_factory(provider=provider, cards=1000, price_per_card_hour=Decimal(20))
    rng = random.Random(7)
    for _ in range(40):
        place(
            buyer, pool, cards=rng.randint(1, 20), hours=rng.choice([1, 2, 3, 5]), start=whole_hour(rng.randint(0, 12))
        )
    for lease in Lease.objects.filter(pool=pool).order_by("pk")[:5]:
        order_cancel(order=lease.order, by="test")  # cancelled leases book nothing
    pool.refresh_from_db()
    windows = list(Lease.objects.filter(pool=pool, status__in=Lease.ACTIVE).values_list("start_at", "end_at", "cards"))
    held = sum(
        cards
        for holding, cards in Lease.objects.filter(pool=pool, status__in=Lease.ACTIVE).values_list("holding", "cards")
        if holding
    )
    assert held == pool.reserved_cards > 0  # the leases starting now hold their cards
    for _ in range(60):
        start = whole_hour(rng.randint(-1, 14)) + rng.choice([0, 30]) * timedelta(minutes=1)
        end = start + rng.randint(1, 8) * H / 2
        room = pool.cards - _peak(windows, start, end)
        assert calendar_fits(pool=pool, cards=room, start=start, end=end)
        assert not calendar_fits(pool=pool, cards=room + 1, start=start, end=end)
