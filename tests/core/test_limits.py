"""Abuse limits: rate limits per key in Redis, body size and page size caps, each answered with the limit."""

import ipaddress
import uuid
from datetime import UTC, datetime

import pytest
import redis
import time_machine
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from billing.cloudevents import BATCH
from billing.models import TopUp
from core.exceptions import RuleViolation
from organizations.models import ApiKey, AuditEvent
from organizations.services import api_key_create
from tests.billing.test_bank_top_ups import top_up
from tests.factories import BuyerFactory
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db

# Mid-window, frozen: a fixed-window count cannot straddle two windows during a test.
NOON = datetime(2026, 11, 29, 12, 0, 10, tzinfo=UTC)
UNLIMITED = (1_000_000, 60)


@pytest.fixture
def limits(settings):  # type: ignore[no-untyped-def]
    """Set some scopes' limits; the others stay unlimited."""

    def set_limits(organization: dict[str, tuple[int, int]] | None = None, **scopes: tuple[int, int]) -> None:
        settings.API_RATE_LIMITS = {
            scope: scopes.get(scope, UNLIMITED) for scope in ("default", "ingest", "payments", "webhooks")
        }
        settings.API_RATE_LIMITS_PER_ORGANIZATION = {
            scope: (organization or {}).get(scope, UNLIMITED) for scope in ("default", "ingest", "payments")
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


def test_more_keys_buy_no_more_top_ups_once_the_organization_is_limited(stripe, buyer, limits) -> None:
    # given the organization's keys share one bucket of 3 payments a minute (each key's own is 3 too)
    limits(payments=(3, 60), organization={"payments": (3, 60)})
    first = keyed(buyer)

    # when its first key is limited, and three new keys try 3 top-ups each in the same minute
    statuses = [top_up(first).status_code for _ in range(4)]
    others = [top_up(client) for client in (keyed(buyer), keyed(buyer), keyed(buyer)) for _ in range(3)]

    # then the new keys are refused too, saying why, and only 3 top-ups exist
    assert statuses == [201, 201, 201, 429]
    assert {response.status_code for response in others} == {429}
    error = others[0].json()["error"]
    assert error["code"] == "rate_limited" and "organization's API keys together" in error["message"]
    assert others[0]["Retry-After"] == "50" and (error["limit"], error["scope"]) == (3, "payments")
    assert TopUp.objects.filter(buyer=buyer).count() == 3


def test_an_organizations_limit_is_its_own_other_organizations_keep_theirs(buyer, other_buyer, limits) -> None:
    limits(organization={"default": (2, 60)})
    first, second, elsewhere = keyed(buyer), keyed(buyer), keyed(other_buyer)

    statuses = [client.get("/api/v1/organizations/me/").status_code for client in (first, second, first)]

    assert statuses == [200, 200, 429]
    assert elsewhere.get("/api/v1/organizations/me/").status_code == 200


def test_an_organization_with_the_most_live_keys_is_refused_another_until_it_revokes_one(buyer, settings) -> None:
    settings.API_KEYS_PER_ORGANIZATION = 3
    client = keyed(buyer)  # 1
    created = [client.post("/api/v1/api-keys/", {"name": f"k{n}"}, format="json") for n in range(3)]

    assert [response.status_code for response in created] == [201, 201, 422]
    error = created[2].json()["error"]
    assert error["code"] == "api_key_limit_reached" and error["limit"] == 3
    assert "revoke one" in error["message"]
    assert ApiKey.objects.filter(organization=buyer, revoked_at__isnull=True).count() == 3

    assert client.delete(f"/api/v1/api-keys/{created[0].json()['id']}/").status_code == 204
    assert client.post("/api/v1/api-keys/", {"name": "again"}, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_the_key_cap_holds_for_keys_made_at_once(settings) -> None:
    settings.API_KEYS_PER_ORGANIZATION = 3
    buyer = BuyerFactory()
    outcomes: list[str] = []

    def create() -> None:
        try:
            api_key_create(organization=buyer, name="at once")
            outcomes.append("created")
        except RuleViolation as refused:
            outcomes.append(refused.code)

    run_concurrently([create] * 10)

    assert sorted(outcomes) == ["api_key_limit_reached"] * 7 + ["created"] * 3
    assert ApiKey.objects.filter(organization=buyer).count() == 3


def test_an_address_failing_to_authenticate_is_locked_out_even_with_a_good_key(buyer, settings) -> None:
    settings.AUTH_FAILURE_RATE_LIMIT = (3, 60)
    address = fresh_address()
    _, good_key = api_key_create(organization=buyer, name="good")
    guesses = ["Bearer cg_000000000000_wrong", "Bearer cg_unknown", "Basic dXNlcjpwYXNz"]

    statuses = [
        APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION=guess).get("/api/v1/organizations/me/").status_code
        for guess in guesses
    ]
    locked = APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Bearer {good_key}").get("/api/v1/organizations/me/")
    elsewhere = APIClient(REMOTE_ADDR=fresh_address(), HTTP_AUTHORIZATION=f"Bearer {good_key}")

    assert statuses == [401, 401, 401]
    assert locked.status_code == 429 and locked["Retry-After"] == "50"
    error = locked.json()["error"]
    assert error["code"] == "rate_limited" and error["scope"] == "auth_failures"
    assert "failed authentications from this address" in error["message"]
    assert elsewhere.get("/api/v1/organizations/me/").status_code == 200
    with time_machine.travel(datetime(2026, 11, 29, 12, 1, 1, tzinfo=UTC), tick=False):
        again = APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Bearer {good_key}")
        assert again.get("/api/v1/organizations/me/").status_code == 200


def test_good_keys_are_not_counted_as_failures(buyer, settings) -> None:
    settings.AUTH_FAILURE_RATE_LIMIT = (1, 60)
    client = keyed(buyer)

    assert {client.get("/api/v1/organizations/me/").status_code for _ in range(3)} == {200}


def test_bad_dashboard_logins_lock_the_address_out(settings) -> None:
    settings.AUTH_FAILURE_RATE_LIMIT = (2, 60)
    User.objects.create_user(username="ada", password="right-password")
    address = fresh_address()
    browser = Client(REMOTE_ADDR=address)

    bad = [browser.post("/dashboard/login/", {"username": "ada", "password": "wrong"}) for _ in range(2)]
    locked = browser.post("/dashboard/login/", {"username": "ada", "password": "right-password"})

    assert [response.status_code for response in bad] == [200, 200]  # the form again, with its error
    assert locked.status_code == 429 and locked["Retry-After"] == "50"
    assert b"Too many failed authentications" in locked.content
    assert "_auth_user_id" not in browser.session
    other = Client(REMOTE_ADDR=fresh_address())
    assert other.post("/dashboard/login/", {"username": "ada", "password": "right-password"}).status_code == 302


def test_bad_admin_logins_lock_the_address_out_too(settings) -> None:
    settings.AUTH_FAILURE_RATE_LIMIT = (2, 60)
    User.objects.create_user(username="root", password="right-password", is_staff=True, is_superuser=True)
    browser = Client(REMOTE_ADDR=fresh_address())

    for _ in range(2):
        browser.post("/admin/login/", {"username": "root", "password": "wrong"})
    locked = browser.post("/admin/login/", {"username": "root", "password": "right-password"})

    assert locked.status_code == 200 and "_auth_user_id" not in browser.session  # refused, password unchecked
    other = Client(REMOTE_ADDR=fresh_address())
    assert other.post("/admin/login/", {"username": "root", "password": "right-password"}).status_code == 302


PROXY = "10.1.2.3"


def test_a_spoofed_x_forwarded_for_is_ignored_without_a_trusted_proxy(buyer, settings) -> None:
    settings.AUTH_FAILURE_RATE_LIMIT = (1, 60)
    settings.TRUSTED_PROXIES = []
    peer, spoofed = fresh_address(), fresh_address()
    _, good_key = api_key_create(organization=buyer, name="good")

    # a bad key sent with a made-up X-Forwarded-For counts against the peer, not the made-up address
    bad = APIClient(REMOTE_ADDR=peer, HTTP_AUTHORIZATION="Bearer cg_bad", HTTP_X_FORWARDED_FOR=spoofed)
    assert bad.get("/api/v1/organizations/me/").status_code == 401
    assert bad.get("/api/v1/organizations/me/").status_code == 429
    good = APIClient(REMOTE_ADDR=fresh_address(), HTTP_AUTHORIZATION=f"Bearer {good_key}", HTTP_X_FORWARDED_FOR=peer)
    assert good.get("/api/v1/organizations/me/").status_code == 200  # naming the locked peer changes nothing


def test_x_forwarded_for_is_honoured_from_a_trusted_proxy_right_most_untrusted_address_first(buyer, settings) -> None:
    settings.AUTH_FAILURE_RATE_LIMIT = (1, 60)
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32")]
    client_address, spoofed = fresh_address(), fresh_address()
    _, good_key = api_key_create(organization=buyer, name="good")

    def through_proxies(authorization: str, forwarded: str):  # type: ignore[no-untyped-def]
        client = APIClient(REMOTE_ADDR=PROXY, HTTP_AUTHORIZATION=authorization, HTTP_X_FORWARDED_FOR=forwarded)
        return client.get("/api/v1/organizations/me/")

    # the client puts a made-up address first; the edge proxy appends the client's, the inner one its own
    assert through_proxies("Bearer cg_bad", f"{spoofed}, {client_address}, 192.0.2.7").status_code == 401
    assert through_proxies(f"Bearer {good_key}", f"{client_address}, 192.0.2.7").status_code == 429
    assert through_proxies(f"Bearer {good_key}", f"{spoofed}, 192.0.2.7").status_code == 200  # not the one locked
    assert through_proxies(f"Bearer {good_key}", "10.9.9.9").status_code == 200  # only proxies: the farthest
    # and the audit trail records the client's address, not the proxy's
    behind = fresh_address()
    created = APIClient(REMOTE_ADDR=PROXY, HTTP_AUTHORIZATION=f"Bearer {good_key}", HTTP_X_FORWARDED_FOR=behind)
    response = created.post("/api/v1/api-keys/", {"name": "from behind the proxy"}, format="json")
    assert response.status_code == 201
    assert AuditEvent.objects.get(action="api_key.create", summary__name="from behind the proxy").ip == behind


def test_a_windows_counters_expire_with_it_and_count_every_request(buyer, limits) -> None:
    limits(default=(10, 60), organization={"default": (20, 60)})
    client = keyed(buyer)

    for _ in range(3):
        assert client.get("/api/v1/organizations/me/").status_code == 200

    redis_client = redis.Redis.from_url(django_settings.REDIS_URL)
    key_id = ApiKey.objects.get(organization=buyer, name="limited").pk
    window = int(NOON.timestamp() // 60)
    for bucket in (f"key:{key_id}", f"org:{buyer.pk}"):
        (counter,) = redis_client.keys(f"*throttle:default:{bucket}:{window}")
        assert int(redis_client.get(counter)) == 3
        assert 0 < redis_client.ttl(counter) <= 61
