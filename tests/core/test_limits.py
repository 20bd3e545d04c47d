"""Abuse limits: rate limits per key in Redis, body size and page size caps, each answered with the limit."""

import uuid
from datetime import UTC, datetime

import pytest
import redis
import time_machine
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from billing.cloudevents import BATCH
from organizations.services import api_key_create

pytestmark = pytest.mark.django_db

# Mid-window, frozen: a fixed-window count cannot straddle two windows during a test.
NOON = datetime(2026, 11, 29, 12, 0, 10, tzinfo=UTC)
UNLIMITED = (1_000_000, 60)


@pytest.fixture
def limits(settings):  # type: ignore[no-untyped-def]
    """Set some scopes' limits; the others stay unlimited."""

    def set_limits(**scopes: tuple[int, int]) -> None:
        settings.API_RATE_LIMITS = {
            scope: scopes.get(scope, UNLIMITED) for scope in ("default", "ingest", "payments", "webhooks")
        }

    return set_limits


@pytest.fixture(autouse=True)
def frozen_clock():  # type: ignore[no-untyped-def]
    with time_machine.travel(NOON, tick=False):
        yield


def fresh_address() -> str:
    """An address no earlier run counted in this window (the counters live in Redis)."""
    n = uuid.uuid4().int
    return f"198.18.{n % 250}.{n // 250 % 250 + 1}"


def keyed(organization) -> APIClient:  # type: ignore[no-untyped-def]
    _, raw_key = api_key_create(organization=organization, name="limited")
    client = APIClient(REMOTE_ADDR=fresh_address())
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def test_a_key_past_its_limit_gets_429_saying_the_limit_and_when_to_retry(buyer, limits) -> None:
    limits(default=(3, 60))
    client = keyed(buyer)

    statuses = [client.get("/api/v1/organizations/me/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/orders/")
    error = response.json()["error"]
    assert response.status_code == 429
    assert error["code"] == "rate_limited"
    assert "3 requests per minute" in error["message"]
    assert (error["limit"], error["period_seconds"], error["scope"]) == (3, 60, "default")
    assert response["Retry-After"] == "50" == str(error["retry_after_seconds"])  # 10 s into the minute


def test_the_count_is_kept_in_redis_per_key(buyer, limits) -> None:
    limits(default=(2, 60))
    first, second = keyed(buyer), keyed(buyer)

    first.get("/api/v1/organizations/me/")
    first.get("/api/v1/organizations/me/")

    assert first.get("/api/v1/organizations/me/").status_code == 429
    assert second.get("/api/v1/organizations/me/").status_code == 200  # another key of the same organization
    assert django_settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    counters = redis.Redis.from_url(django_settings.REDIS_URL).keys("*throttle:default:key:*")
    assert len(counters) >= 2


def test_the_limit_starts_again_in_the_next_window(buyer, limits) -> None:
    limits(default=(1, 60))
    client = keyed(buyer)
    client.get("/api/v1/organizations/me/")
    assert client.get("/api/v1/organizations/me/").status_code == 429

    with time_machine.travel(datetime(2026, 11, 29, 12, 1, 1, tzinfo=UTC), tick=False):
        assert client.get("/api/v1/organizations/me/").status_code == 200


def test_usage_ingestion_has_its_own_limit(provider, limits) -> None:
    limits(default=(1, 60), ingest=(2, 60))
    client = keyed(provider)
    assert client.get("/api/v1/organizations/me/").status_code == 200
    assert client.get("/api/v1/organizations/me/").status_code == 429

    statuses = [
        client.generic("POST", "/api/v1/usage-events/", b"[]", content_type=BATCH).status_code for _ in range(3)
    ]

    assert statuses == [400, 400, 429]  # an empty batch is refused, but still counted
    assert (
        "ingest"
        in client.generic("POST", "/api/v1/usage-events/", b"[]", content_type=BATCH).json()["error"]["message"]
    )


def test_paying_has_its_own_limit(buyer, limits) -> None:
    limits(payments=(1, 60))
    client = keyed(buyer)
    missing = f"/api/v1/invoices/{uuid.uuid4()}/pay/"

    assert client.post(missing, {}, format="json").status_code == 404
    assert client.post(missing, {}, format="json").status_code == 429
    assert client.get("/api/v1/invoices/").status_code == 200


def test_webhooks_are_limited_by_the_senders_address(limits) -> None:
    limits(webhooks=(2, 60))
    sender, other = APIClient(REMOTE_ADDR=fresh_address()), APIClient(REMOTE_ADDR=fresh_address())

    statuses = [sender.post("/api/v1/webhooks/stripe/", {}, format="json").status_code for _ in range(3)]

    assert statuses == [400, 400, 429]  # unsigned, then limited
    assert other.post("/api/v1/webhooks/stripe/", {}, format="json").status_code == 400


def test_public_reference_data_is_limited_by_address(limits) -> None:
    limits(default=(1, 60))
    client = APIClient(REMOTE_ADDR=fresh_address())

    assert client.get("/api/v1/hubs/").status_code == 200
    response = client.get("/api/v1/gpu-models/")
    assert response.status_code == 429
    assert "this address" in response.json()["error"]["message"]


def test_a_body_over_the_limit_is_a_413_that_states_it(buyer_client, settings) -> None:
    settings.API_MAX_BODY_BYTES = 2048

    response = buyer_client.post("/api/v1/quotes/", {"gpu_model": "x" * 4000}, format="json")

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "at most 2048 bytes" in error["message"] and error["limit_bytes"] == 2048


def test_usage_ingestion_takes_bodies_up_to_10_mb(provider, make_client, settings) -> None:
    settings.API_MAX_BODY_BYTES = 2048

    response = make_client(provider).generic(
        "POST", "/api/v1/usage-events/", b"[" + b" " * 4096 + b"]", content_type=BATCH
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_batch"


@pytest.mark.parametrize("query", ["page_size=501", "page_size=0", "page_size=ten", "page=0", "page=-1"])
def test_a_page_size_or_page_out_of_range_is_a_400_that_states_the_range(buyer_client, query) -> None:
    response = buyer_client.get(f"/api/v1/orders/?{query}")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_pagination"
    assert "1 to 500" in error["message"] or "from 1" in error["message"]


def test_the_largest_page_is_served(buyer_client) -> None:
    assert buyer_client.get("/api/v1/orders/?page_size=500").status_code == 200


def test_a_nul_character_in_the_query_or_the_body_is_a_400(buyer_client) -> None:
    assert buyer_client.get("/api/v1/orders/?status=%00").status_code == 400
    response = buyer_client.post("/api/v1/api-keys/", {"name": "a\x00b"}, format="json")
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]["message"]


def test_more_vouchers_than_one_request_takes_is_a_413_that_states_the_limit(issuer, make_client) -> None:
    from tests.vouchers.factories import program_factory

    program = program_factory(issuer)

    response = make_client(issuer).post(
        f"/api/v1/voucher-programs/{program.pk}/vouchers/", [{}] * 10_001, format="json"
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_vouchers"
    assert "10,000" in response.json()["error"]["message"]
