import json
import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace import services
from marketplace.models import Lease, Order
from marketplace.serializers import OrderRequestSerializer
from organizations.services import api_key_create
from pools.models import GpuModel, PricePlan, ResourcePool
from pools.services import pool_suspend
from tests.factories import BuyerFactory, ProviderFactory, pool_factory

ORDER = {"gpu_model": "H100-80G", "cards": 8, "workload": "training", "duration_hours": "4"}
REALTIME = {
    "gpu_model": "H100-80G",
    "cards": 2,
    "workload": "realtime_inference",
    "user_region": "shanghai",
    "max_latency_ms": 10,
    "duration_hours": "1",
}


def reserved(pool: ResourcePool) -> int:
    pool.refresh_from_db()
    return pool.reserved_cards


@pytest.mark.django_db
def test_an_order_is_placed_on_a_pool_and_reserves_its_cards(buyer_client) -> None:
    pool = pool_factory(cards=100)

    response = buyer_client.post("/api/v1/orders/", ORDER, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "placed"
    lease = Lease.objects.get(pk=body["lease"])
    assert (lease.pool_id, lease.cards, lease.status) == (pool.pk, 8, "scheduled")
    assert reserved(pool) == 8
    assert Decimal(body["estimated_cost"]) > 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        ORDER,
        {**REALTIME, "user_region": "beijing"},
        {**ORDER, "workload": "batch_inference", "deadline": "2026-03-20T06:00:00+08:00", "max_price": "40.5"},
        {"min_memory_gb": 80, "cards": 150, "workload": "training", "duration_hours": "2.5", "split": True},
        {**ORDER, "allowed_hubs": ["ningxia", "yangtze"], "min_green_share": "0.25"},
    ],
)
def test_an_order_answers_as_it_reads_back(buyer, buyer_client, body) -> None:
    """The answer is built from the order in hand (no query); it is the order as GET reads it."""
    pool_factory(cards=100)
    pool_factory(cards=100)
    pool_factory(cards=100, hub_id="jingjinji", province="Beijing")

    response = buyer_client.post("/api/v1/orders/", body, format="json")

    assert response.status_code == 201, response.json()
    placed = response.json()
    read_back = buyer_client.get(f"/api/v1/orders/{placed['id']}/").json()
    for answer in (placed, read_back):
        answer["leases"].sort(key=lambda lease: lease["id"])
    assert placed == read_back


@pytest.mark.django_db
def test_a_quote_ranks_placements_and_reserves_nothing(buyer_client) -> None:
    cheap = pool_factory(price_per_card_hour=Decimal("10"))
    dear = pool_factory(price_per_card_hour=Decimal("30"))
    pool_factory(gpu_model=GpuModel.objects.get(code="A100-80G"))

    response = buyer_client.post("/api/v1/quotes/", ORDER, format="json")

    assert response.status_code == 200
    body = response.json()
    assert [p["pool"] for p in body["placements"]] == [str(cheap.pk), str(dear.pk)]
    assert body["rejected"]["summary"] == [{"reason": "gpu_model", "message": "other GPU model", "pools": 1}]
    assert reserved(cheap) == reserved(dear) == 0
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_a_quote_shows_its_average_price_with_four_places(buyer_client) -> None:
    pool = pool_factory()
    PricePlan.objects.filter(pool=pool).update(hour_prices=["12.3456700000"] * 24)

    response = buyer_client.post("/api/v1/quotes/", {**ORDER, "cards": 2, "duration_hours": "3"}, format="json")

    (placement,) = response.json()["placements"]
    assert placement["average_price_per_card_hour"] == "12.3457"
    assert placement["estimated_cost"] == "74.07"  # 2 x 3 x 12.34567


@pytest.mark.django_db
def test_an_order_and_its_lease_show_the_estimate_its_quote_showed_to_the_fen(buyer_client) -> None:
    pool = pool_factory()
    PricePlan.objects.filter(pool=pool).update(hour_prices=["12.3456750000"] * 24)  # 74.0740500 for 2 x 3 h
    body = {**ORDER, "cards": 2, "duration_hours": "3"}

    quoted = buyer_client.post("/api/v1/quotes/", body, format="json").json()["placements"][0]["estimated_cost"]
    order = buyer_client.post("/api/v1/orders/", body, format="json").json()

    assert quoted == order["estimated_cost"] == order["leases"][0]["estimated_cost"] == "74.07"


@pytest.mark.django_db
def test_no_capacity_is_a_422_with_the_reasons_summarised(buyer_client) -> None:
    pool_factory(cards=4)
    pool_factory(hub_id="jingjinji", province="Beijing", cards=100)

    response = buyer_client.post("/api/v1/orders/", {**REALTIME, "cards": 8, "max_latency_ms": 5}, format="json")

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_capacity"
    assert error["message"] == "No pool can take this order now: 2 pools: latency over 5 ms."
    assert {row["reason"] for row in error["reasons"]} == {"latency"}
    assert not Order.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gpu_model": "GTX-1080"}, "gpu_model"),
        ({"gpu_model": None}, "gpu_model"),
        ({"cards": 0}, "cards"),
        ({"cards": -1}, "cards"),
        ({"cards": "eight"}, "cards"),
        ({"duration_hours": "0"}, "duration_hours"),
        ({"duration_hours": "NaN"}, "duration_hours"),
        ({"workload": "mining"}, "workload"),
        ({"allowed_hubs": ["atlantis"]}, "allowed_hubs"),
        ({"min_green_share": "1.5"}, "min_green_share"),
        ({"deadline": "2026-01-01T00:00:00Z", "earliest_start": "2026-01-02T00:00:00Z"}, "deadline"),
        ({"deadline": "2026-01-01T02:00:00Z", "earliest_start": "2026-01-01T00:00:00Z"}, "deadline"),
        ({"pool": "x"}, "pool"),
    ],
)
def test_bad_orders_are_refused_and_reserve_nothing(buyer_client, change, field) -> None:  # type: ignore[no-untyped-def]
    pool = pool_factory()

    response = buyer_client.post("/api/v1/orders/", {**ORDER, **change}, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert reserved(pool) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "change", "field"),
    [
        ("gpu_requirement_missing", {"gpu_model": None}, "gpu_model"),
        ("required_for_realtime", {"workload": "realtime_inference"}, "user_region"),
        ("too_far_ahead", {"deadline": "2099-01-01T00:00:00Z"}, "deadline"),
        ("deadline_before_start", {"deadline": "2026-01-01T00:00Z", "earliest_start": "2026-01-02T00:00Z"}, "deadline"),
        ("window_too_short", {"deadline": "2026-01-01T02:00Z", "earliest_start": "2026-01-01T00:00Z"}, "deadline"),
    ],
)  # fmt: skip
def test_each_rule_across_fields_is_answered_with_its_own_code(buyer_client, code, change, field) -> None:  # type: ignore[no-untyped-def]
    response = buyer_client.post("/api/v1/quotes/", {**ORDER, **change}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"][field][0]["code"] == code
    assert code in OrderRequestSerializer.rules  # the schema's description names it


@pytest.mark.django_db
def test_realtime_work_needs_a_user_region_and_a_latency_bound(buyer_client) -> None:
    response = buyer_client.post(
        "/api/v1/orders/", {**REALTIME, "user_region": None, "max_latency_ms": None}, format="json"
    )

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"user_region", "max_latency_ms"}


@pytest.mark.django_db
def test_a_deadline_too_soon_for_the_duration_is_refused(buyer_client) -> None:
    pool_factory()
    deadline = (timezone.now() + timedelta(hours=2)).isoformat()

    response = buyer_client.post("/api/v1/orders/", {**ORDER, "deadline": deadline}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "deadline_too_soon"


@pytest.mark.django_db
def test_max_latency_for_batch_work_is_ignored_with_a_warning(buyer_client) -> None:
    pool_factory()

    response = buyer_client.post("/api/v1/orders/", {**ORDER, "max_latency_ms": 1}, format="json")

    assert response.status_code == 201
    assert response.json()["warnings"] == ["max_latency_ms is ignored for batch and training work."]


@pytest.mark.django_db
def test_a_retried_order_with_the_same_idempotency_key_reserves_once(buyer_client) -> None:
    pool = pool_factory()

    first = buyer_client.post("/api/v1/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    second = buyer_client.post("/api/v1/orders/", ORDER, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

    assert first.json()["id"] == second.json()["id"]
    assert reserved(pool) == 8


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_orders_for_100_cards_lease_exactly_100() -> None:
    pool = pool_factory(cards=100)
    buyer = BuyerFactory()
    _, raw_key = api_key_create(organization=buyer, name="t")
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def place_ten() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait()
        try:
            for _ in range(10):
                response = client.post("/api/v1/orders/", {**ORDER, "cards": 1}, format="json")
                statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=place_ten) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses).count(201) == 100
    assert sorted(statuses).count(422) == 100
    assert reserved(pool) == 100
    assert sum(Lease.objects.filter(pool=pool).values_list("cards", flat=True)) == 100


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("end", "status", "reason"),
    [
        ("cancel", "cancelled", "order_cancelled"),
        ("terminate", "completed", "terminated_by_buyer"),
        ("fail", "failed", "pool_suspended"),
        ("expire", "completed", "booked_time_ended"),
    ],
)
def test_each_way_a_lease_ends_frees_its_cards_once(buyer, end, status, reason) -> None:  # type: ignore[no-untyped-def]
    pool = pool_factory(cards=100)
    order = _place(buyer)
    lease = order.leases.get()
    if end != "cancel":
        services.lease_start(lease_id=lease.pk, by="test")

    if end == "cancel":
        services.order_cancel(order=order, by="test")
    elif end == "terminate":
        services.lease_terminate(lease=lease, organization=buyer, by="test")
    elif end == "fail":
        pool_suspend(pool=pool, by="test")
        services.leases_fail_lost_pools(lost_after_seconds=900)
    else:
        services.leases_end_expired(now=lease.end_at)

    lease.refresh_from_db()
    assert (lease.status, lease.end_reason) == (status, reason)
    assert reserved(pool) == 0
    # Every other path now finds the lease ended and frees nothing more.
    services.leases_end_expired(now=lease.end_at + timedelta(hours=1))
    services.leases_fail_lost_pools(lost_after_seconds=900)
    assert reserved(pool) == 0


@pytest.mark.django_db
def test_a_lease_on_a_silent_pool_fails_with_that_reason(buyer) -> None:
    pool = pool_factory(cards=100)
    lease = _place(buyer).leases.get()
    ResourcePool.objects.filter(pk=pool.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))

    assert services.leases_fail_lost_pools(lost_after_seconds=900) == 1

    lease.refresh_from_db()
    assert (lease.status, lease.end_reason, reserved(pool)) == ("failed", "pool_heartbeat_lost", 0)


@pytest.mark.django_db
def test_scheduled_leases_start_when_their_time_comes(buyer) -> None:
    pool_factory(cards=100)
    lease = _place(buyer).leases.get()

    assert services.leases_start_due(now=lease.start_at - timedelta(seconds=1)) == 0
    assert services.leases_start_due(now=lease.start_at) == 1
    assert services.leases_start_due(now=lease.start_at) == 0

    lease.refresh_from_db()
    assert lease.status == "running"


@pytest.mark.django_db
def test_terminating_an_ended_lease_is_a_conflict(buyer, buyer_client) -> None:
    pool_factory(cards=100)
    lease = _place(buyer).leases.get()
    assert buyer_client.post(f"/api/v1/leases/{lease.pk}/terminate/").status_code == 200

    response = buyer_client.post(f"/api/v1/leases/{lease.pk}/terminate/")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_already_ended"


@pytest.mark.django_db
def test_a_provider_starts_and_preempts_leases_on_its_pools(buyer, make_client) -> None:
    provider = ProviderFactory()
    pool = pool_factory(provider=provider, cards=100)
    lease = _place(buyer).leases.get()
    client = make_client(provider)

    started = client.post(f"/api/v1/leases/{lease.pk}/start/")
    ended = client.post(f"/api/v1/leases/{lease.pk}/terminate/")

    assert started.json()["status"] == "running"
    assert (ended.json()["status"], ended.json()["end_reason"]) == ("preempted", "terminated_by_provider")
    assert reserved(pool) == 0


@pytest.mark.django_db
def test_a_running_order_cannot_be_cancelled(buyer, buyer_client) -> None:
    pool_factory(cards=100)
    order = _place(buyer)
    services.lease_start(lease_id=order.leases.get().pk, by="test")

    response = buyer_client.post(f"/api/v1/orders/{order.pk}/cancel/")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "order_running"


@pytest.mark.django_db
def test_another_buyers_orders_and_leases_are_404_everywhere(buyer, other_buyer_client) -> None:
    pool_factory(cards=100)
    order = _place(buyer)
    lease = order.leases.get()
    client = other_buyer_client

    assert client.get("/api/v1/orders/").json()["results"] == []
    assert client.get("/api/v1/leases/").json()["results"] == []
    for method, url in [
        ("get", f"/api/v1/orders/{order.pk}/"),
        ("post", f"/api/v1/orders/{order.pk}/cancel/"),
        ("get", f"/api/v1/leases/{lease.pk}/"),
        ("post", f"/api/v1/leases/{lease.pk}/terminate/"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 404, (url, response.json())
    lease.refresh_from_db()
    assert lease.status == "scheduled"


@pytest.mark.django_db
def test_a_provider_sees_only_leases_on_its_own_pools(buyer, make_client) -> None:
    mine, theirs = ProviderFactory(), ProviderFactory()
    pool_factory(provider=mine, cards=100, price_per_card_hour=Decimal(1))
    pool_factory(provider=theirs, cards=100, price_per_card_hour=Decimal(50))
    lease = _place(buyer).leases.get()
    other = make_client(theirs)

    assert [row["id"] for row in make_client(mine).get("/api/v1/leases/").json()["results"]] == [str(lease.pk)]
    assert other.get("/api/v1/leases/").json()["results"] == []
    assert other.post(f"/api/v1/leases/{lease.pk}/start/").status_code == 404


def _place(buyer) -> Order:  # type: ignore[no-untyped-def]
    from marketplace.dispatch import Requirements

    return services.order_place(
        buyer=buyer, requirements=Requirements(cards=8, duration_hours=4, workload="training", gpu_model="H100-80G")
    )


# --- buying the offer one chose ----------------------------------------------------------


@pytest.mark.django_db
def test_an_order_for_a_chosen_offer_lands_on_that_pool_though_another_is_cheaper(buyer_client) -> None:
    pool_factory(price_per_card_hour=Decimal("10"))
    chosen = pool_factory(price_per_card_hour=Decimal("30"))
    offers = [offer["pool"] for offer in buyer_client.get("/api/v1/offers/").json()["results"]]
    assert str(chosen.pk) in offers

    response = buyer_client.post("/api/v1/orders/", {**ORDER, "pool": str(chosen.pk)}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["pool"] == str(chosen.pk)
    assert [(lease["pool"], lease["cards"]) for lease in body["leases"]] == [(str(chosen.pk), 8)]
    assert reserved(chosen) == 8


@pytest.mark.django_db
def test_a_quote_for_a_chosen_offer_weighs_that_pool_alone(buyer_client) -> None:
    pool_factory(price_per_card_hour=Decimal("10"))
    chosen = pool_factory(price_per_card_hour=Decimal("30"))

    body = buyer_client.post("/api/v1/quotes/", {**ORDER, "pool": str(chosen.pk)}, format="json").json()

    assert [placement["pool"] for placement in body["placements"]] == [str(chosen.pk)]
    assert body["rejected"]["pools"] == []


def _chosen_pool_refused(buyer_client, body, pool) -> dict:  # type: ignore[no-untyped-def]
    """The 422 for an order on ``pool``; nothing is reserved or recorded."""
    quoted = buyer_client.post("/api/v1/quotes/", {**body, "pool": str(pool.pk)}, format="json").json()
    response = buyer_client.post("/api/v1/orders/", {**body, "pool": str(pool.pk)}, format="json")

    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == "pool_rejected"
    assert error["pool"] == str(pool.pk)
    assert quoted["placements"] == []
    assert quoted["rejected"]["pools"] == [{"pool": str(pool.pk), "reason": error["reason"]}]  # the quote's reason
    assert reserved(pool) == 0
    assert not Order.objects.exists()
    return error


@pytest.mark.django_db
def test_a_chosen_pool_without_enough_free_cards_is_refused_with_that_reason(buyer_client) -> None:
    pool_factory(cards=100)  # another pool could take it: the buyer chose this one
    small = pool_factory(cards=4)

    error = _chosen_pool_refused(buyer_client, ORDER, small)

    assert (error["reason"], error["message"]) == (
        "free_cards",
        "The chosen pool cannot take this order: not enough free cards.",
    )
    assert error["reasons"] == [{"reason": "free_cards", "message": "not enough free cards", "pools": 1}]


@pytest.mark.django_db
def test_a_chosen_pool_of_another_gpu_model_is_refused_with_that_reason(buyer_client) -> None:
    a100 = pool_factory(gpu_model=GpuModel.objects.get(code="A100-80G"))

    error = _chosen_pool_refused(buyer_client, ORDER, a100)

    assert (error["reason"], error["message"]) == (
        "gpu_model",
        "The chosen pool cannot take this order: other GPU model.",
    )


@pytest.mark.django_db
def test_a_chosen_pool_too_far_for_realtime_work_is_refused_with_that_reason(buyer_client) -> None:
    pool_factory(hub_id="yangtze", province="Shanghai")  # near enough: the buyer chose the far one
    far = pool_factory()  # Ningxia, far from Shanghai's users

    error = _chosen_pool_refused(buyer_client, REALTIME, far)

    assert (error["reason"], error["message"]) == (
        "latency",
        "The chosen pool cannot take this order: latency over 10 ms.",
    )


@pytest.mark.django_db
def test_an_unknown_pool_and_pools_out_of_the_market_are_refused_alike(buyer_client) -> None:
    pool_factory()
    out_of_market = [
        pool_factory(status=ResourcePool.Status.PENDING),
        pool_factory(status=ResourcePool.Status.SUSPENDED),
        pool_factory(status=ResourcePool.Status.RETIRED),
    ]
    answers = []

    for pool_id in [uuid.uuid4(), *(pool.pk for pool in out_of_market)]:
        response = buyer_client.post("/api/v1/orders/", {**ORDER, "pool": str(pool_id)}, format="json")
        answers.append((response.status_code, response.json()))

    assert answers[0][0] == 422
    assert answers[0][1]["error"]["code"] == "pool_not_offered"
    assert answers[0][1]["error"]["fields"]["pool"][0]["code"] == "pool_not_offered"
    assert all(answer == answers[0] for answer in answers)  # nothing tells them apart
    assert str(out_of_market[0].pk) not in json.dumps(answers)
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_a_retried_order_for_a_chosen_pool_places_it_once(buyer_client) -> None:
    chosen = pool_factory()
    other = pool_factory()
    body = {**ORDER, "pool": str(chosen.pk)}

    first = buyer_client.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="chosen-1")
    again = buyer_client.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="chosen-1")
    elsewhere = buyer_client.post(
        "/api/v1/orders/", {**body, "pool": str(other.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="chosen-1"
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert elsewhere.status_code == 409
    assert elsewhere.json()["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1
    assert (reserved(chosen), reserved(other)) == (8, 0)


@pytest.mark.django_db
def test_no_capacity_in_chinese_keeps_its_code_and_reasons_and_translates_the_summary(buyer_client) -> None:
    pool_factory(cards=4)
    pool_factory(hub_id="jingjinji", province="Beijing", cards=100)

    response = buyer_client.post(
        "/api/v1/orders/", {**REALTIME, "cards": 8, "max_latency_ms": 5}, format="json", HTTP_ACCEPT_LANGUAGE="zh-CN"
    )

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (422, "no_capacity")
    assert error["message"] == "目前没有资源池能承接此订单：2 个资源池：时延超过 5 毫秒。"
    assert [(row["reason"], row["message"]) for row in error["reasons"]] == [("latency", "时延超过 5 毫秒")]
