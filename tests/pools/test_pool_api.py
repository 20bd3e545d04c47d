from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from pools.models import PoolStatusChange, PricePlan, ResourcePool
from tests.factories import OperatorFactory, pool_factory

pytestmark = pytest.mark.django_db

VALID_POOL = {
    "name": "Zhongwei H100 A",
    "hub": "ningxia",
    "province": "Ningxia",
    "city": "Zhongwei",
    "gpu_model": "H100-80G",
    "cards": 512,
    "price_per_card_hour": "14.5000",
    "pue": "1.15",
    "green_share": "0.62",
    "interconnect": "infiniband",
    "token_prices": {"deepseek-v3": {"input": "2.00", "output": "8.00"}},
}


@pytest.fixture
def provider_client(provider, make_client):  # type: ignore[no-untyped-def]
    return make_client(provider)


@pytest.fixture
def operator_client(operator, make_client):  # type: ignore[no-untyped-def]
    return make_client(operator)


def test_a_provider_registers_a_pool_that_waits_for_approval(provider_client, provider) -> None:
    response = provider_client.post("/api/v1/pools/", VALID_POOL, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert body["provider"] == provider.slug
    assert (body["cards"], body["free_cards"], body["price_version"]) == (512, 512, 1)
    assert body["token_prices"] == {"deepseek-v3": {"input": "2.0000", "output": "8.0000"}}
    assert set(body["time_of_use"]) == {"peak", "flat", "valley"}
    assert PoolStatusChange.objects.get(pool_id=body["id"]).changed_by.startswith(provider.slug)


@pytest.mark.parametrize("kind_fixture", ["buyer", "issuer", "operator"])
def test_only_providers_register_pools(kind_fixture, request, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(request.getfixturevalue(kind_fixture))

    response = client.post("/api/v1/pools/", VALID_POOL, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not ResourcePool.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hub": "atlantis"}, "hub"),
        ({"gpu_model": "GTX-1080"}, "gpu_model"),
        ({"cards": 0}, "cards"),
        ({"cards": -8}, "cards"),
        ({"cards": 100_001}, "cards"),
        ({"cards": "many"}, "cards"),
        ({"price_per_card_hour": "-1"}, "price_per_card_hour"),
        ({"price_per_card_hour": "0"}, "price_per_card_hour"),
        ({"price_per_card_hour": "cheap"}, "price_per_card_hour"),
        ({"price_per_card_hour": "NaN"}, "price_per_card_hour"),
        ({"price_per_card_hour": "Infinity"}, "price_per_card_hour"),
        ({"pue": "0.95"}, "pue"),
        ({"green_share": "1.2"}, "green_share"),
        ({"green_share": "-0.1"}, "green_share"),
        ({"province": "Atlantis"}, "province"),
        ({"time_of_use": {"peak": "0"}}, "time_of_use"),
        ({"token_prices": {"m": {"input": "-1", "output": "1"}}}, "token_prices"),
        ({"status": "active"}, "status"),
        ({"reserved_cards": 0}, "reserved_cards"),
    ],
)
def test_bad_pool_registrations_are_refused_by_field_and_change_nothing(provider_client, change, field) -> None:  # type: ignore[no-untyped-def]
    response = provider_client.post("/api/v1/pools/", {**VALID_POOL, **change}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] in {"validation_error", "unknown_field"}
    assert field in error["fields"]
    assert not ResourcePool.objects.exists()


def test_a_province_outside_the_hubs_region_is_refused(provider_client) -> None:
    response = provider_client.post("/api/v1/pools/", {**VALID_POOL, "province": "Guangdong"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "province_not_in_hub"
    assert not ResourcePool.objects.exists()


def test_a_time_of_use_band_the_hub_lacks_is_refused(provider_client) -> None:
    response = provider_client.post(
        "/api/v1/pools/", {**VALID_POOL, "time_of_use": {"superpeak": "1.5"}}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_band"
    assert not ResourcePool.objects.exists()


def test_providers_list_only_their_own_pools_and_operators_all(provider, make_client) -> None:
    mine = pool_factory(provider=provider)
    theirs = pool_factory()

    own_ids = {row["id"] for row in make_client(provider).get("/api/v1/pools/").json()["results"]}
    all_ids = {row["id"] for row in make_client(OperatorFactory()).get("/api/v1/pools/").json()["results"]}

    assert own_ids == {str(mine.pk)}
    assert all_ids == {str(mine.pk), str(theirs.pk)}


def test_another_providers_pool_is_404_for_every_pool_endpoint(provider_client) -> None:
    theirs = pool_factory()
    base = f"/api/v1/pools/{theirs.pk}/"
    calls = [
        ("get", base, None),
        ("patch", base, {"name": "stolen"}),
        ("post", base + "retire/", {}),
        ("post", base + "heartbeat/", {"healthy_cards": 1, "observed_at": timezone.now().isoformat()}),
        ("get", base + "prices/", None),
    ]

    for method, url, body in calls:
        response = getattr(provider_client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.json())
        assert response.json()["error"]["code"] == "not_found"

    theirs.refresh_from_db()
    assert (theirs.name, theirs.status, theirs.healthy_cards) == ("pool", "active", 100)


def test_buyers_and_issuers_may_not_read_pools(buyer, issuer, make_client) -> None:
    pool = pool_factory()

    for organization in (buyer, issuer):
        client = make_client(organization)
        assert client.get("/api/v1/pools/").status_code == 403
        assert client.get(f"/api/v1/pools/{pool.pk}/").status_code == 403


def test_an_operator_approves_and_suspends_with_who_and_when(provider_client, operator_client, operator) -> None:
    pool_id = provider_client.post("/api/v1/pools/", VALID_POOL, format="json").json()["id"]

    approved = operator_client.post(f"/api/v1/pools/{pool_id}/approve/", {"reason": "site visit ok"}, format="json")
    suspended = operator_client.post(f"/api/v1/pools/{pool_id}/suspend/", {}, format="json")

    assert approved.status_code == 200 and approved.json()["status"] == "active"
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    history = list(PoolStatusChange.objects.filter(pool_id=pool_id).values_list("to_status", "changed_by", "reason"))
    assert [row[0] for row in history] == ["pending", "active", "suspended"]
    assert history[1][1].startswith(operator.slug)
    assert history[1][2] == "site visit ok"


def test_a_provider_cannot_approve_its_own_pool(provider, provider_client) -> None:
    pool = pool_factory(provider=provider, status=ResourcePool.Status.PENDING)

    response = provider_client.post(f"/api/v1/pools/{pool.pk}/approve/", {}, format="json")

    assert response.status_code == 403
    pool.refresh_from_db()
    assert pool.status == "pending"


def test_approving_an_active_pool_is_a_conflict(operator_client) -> None:
    pool = pool_factory()

    response = operator_client.post(f"/api/v1/pools/{pool.pk}/approve/", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_transition"


def test_a_provider_retires_an_idle_pool(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)

    response = provider_client.post(f"/api/v1/pools/{pool.pk}/retire/", {}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "retired"


def test_a_pool_with_leased_cards_cannot_be_retired(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)
    ResourcePool.objects.filter(pk=pool.pk).update(reserved_cards=8)

    response = provider_client.post(f"/api/v1/pools/{pool.pk}/retire/", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "pool_in_use"
    pool.refresh_from_db()
    assert pool.status == "active"


def test_a_heartbeat_updates_healthy_and_free_cards(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)
    ResourcePool.objects.filter(pk=pool.pk).update(reserved_cards=30)
    observed = timezone.now()

    response = provider_client.post(
        f"/api/v1/pools/{pool.pk}/heartbeat/", {"healthy_cards": 90, "observed_at": observed.isoformat()}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["healthy_cards"], response.json()["free_cards"]) == (90, 60)
    assert response.json()["stale"] is False


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"healthy_cards": 101}, "too_many_healthy_cards"),
        ({"healthy_cards": -1}, "validation_error"),
        ({"healthy_cards": 10, "observed_at": "2999-01-01T00:00:00Z"}, "heartbeat_in_future"),
        ({"healthy_cards": 10, "observed_at": "yesterday"}, "validation_error"),
    ],
)
def test_bad_heartbeats_are_refused_and_change_nothing(provider, provider_client, body, code) -> None:  # type: ignore[no-untyped-def]
    pool = pool_factory(provider=provider)
    before = pool.last_heartbeat_at
    body = {"observed_at": timezone.now().isoformat(), **body}

    response = provider_client.post(f"/api/v1/pools/{pool.pk}/heartbeat/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    pool.refresh_from_db()
    assert (pool.healthy_cards, pool.last_heartbeat_at) == (100, before)


def test_a_late_heartbeat_does_not_overwrite_a_newer_one(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)
    now = timezone.now()
    url = f"/api/v1/pools/{pool.pk}/heartbeat/"

    provider_client.post(url, {"healthy_cards": 80, "observed_at": now.isoformat()}, format="json")
    provider_client.post(
        url, {"healthy_cards": 20, "observed_at": (now - timedelta(minutes=1)).isoformat()}, format="json"
    )

    pool.refresh_from_db()
    assert (pool.healthy_cards, pool.last_heartbeat_at) == (80, now)
    assert pool.heartbeats.count() == 2


def test_a_price_change_makes_a_new_version_and_keeps_the_old(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)

    response = provider_client.patch(f"/api/v1/pools/{pool.pk}/", {"price_per_card_hour": "12.0000"}, format="json")

    assert response.status_code == 200
    assert (response.json()["price_version"], response.json()["price_per_card_hour"]) == (2, "12.0000")
    versions = provider_client.get(f"/api/v1/pools/{pool.pk}/prices/").json()
    assert [(v["version"], v["price_per_card_hour"]) for v in versions] == [(2, "12.0000"), (1, "15.0000")]


def test_a_retroactive_price_change_is_refused(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()

    response = provider_client.patch(
        f"/api/v1/pools/{pool.pk}/", {"price_per_card_hour": "1.0000", "effective_from": yesterday}, format="json"
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "retroactive_price_change"
    assert PricePlan.objects.filter(pool=pool).count() == 1


def test_a_provider_cannot_patch_status_or_counters(provider, provider_client) -> None:
    pool = pool_factory(provider=provider, status=ResourcePool.Status.PENDING)

    for field, value in [("status", "active"), ("reserved_cards", 0), ("free_cards", 100), ("provider", "x")]:
        response = provider_client.patch(f"/api/v1/pools/{pool.pk}/", {field: value}, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unknown_field"

    pool.refresh_from_db()
    assert pool.status == "pending"


def test_total_cards_cannot_drop_below_the_leased_cards(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)
    ResourcePool.objects.filter(pk=pool.pk).update(reserved_cards=40)

    response = provider_client.patch(f"/api/v1/pools/{pool.pk}/", {"cards": 39}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "cards_in_use"
    pool.refresh_from_db()
    assert pool.cards == 100


def test_description_changes_apply_at_once(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)

    response = provider_client.patch(
        f"/api/v1/pools/{pool.pk}/", {"name": "renamed", "cards": 80, "green_share": "0.9"}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["cards"], response.json()["green_share"]) == (
        "renamed",
        80,
        "0.900",
    )
    assert PricePlan.objects.filter(pool=pool).count() == 1
    assert Decimal(response.json()["price_per_card_hour"]) == Decimal("15")


def test_a_pools_prices_are_shown_with_four_places_rounded_half_up(provider, provider_client) -> None:
    pool = pool_factory(provider=provider)
    exact = [f"{10 + hour}.1234550000" for hour in range(24)]  # as factors and electricity make them
    PricePlan.objects.filter(pool=pool).update(
        hour_prices=exact, token_prices={"qwen3-72b": {"input": "1.2345500000", "output": "4.0000400000"}}
    )

    (version,) = provider_client.get(f"/api/v1/pools/{pool.pk}/prices/").json()
    detail = provider_client.get(f"/api/v1/pools/{pool.pk}/").json()

    assert version["hour_prices"] == [f"{10 + hour}.1235" for hour in range(24)]
    assert version["price_per_card_hour"] == "15.0000"
    rounded_tokens = {"qwen3-72b": {"input": "1.2346", "output": "4.0000"}}
    assert version["token_prices"] == detail["token_prices"] == rounded_tokens
    assert PricePlan.objects.get(pool=pool).hour_prices == exact  # exact inside


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**VALID_POOL, "price_per_card_hour": "14.50001"}, "price_per_card_hour"),
        ({**VALID_POOL, "token_prices": {"deepseek-v3": {"input": "2.00001", "output": "8"}}}, "token_prices"),
    ],
)
def test_a_price_set_with_more_than_four_places_is_refused_not_rounded(provider_client, body, field) -> None:
    response = provider_client.post("/api/v1/pools/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert "at most 4 decimal places" in str(response.json()["error"]["fields"][field])
    assert not ResourcePool.objects.exists()
