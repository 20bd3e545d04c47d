import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from core.models import IdempotencyRecord
from organizations.models import Organization
from organizations.services import api_key_create
from tests.factories import BuyerFactory

pytestmark = pytest.mark.urls("tests.core.idempotency_urls")


def _post(client: APIClient, body: dict, key: str | None = "key-1"):  # type: ignore[no-untyped-def]
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/things/", body, format="json", **headers)


@pytest.mark.django_db
def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(buyer_client) -> None:
    first = _post(buyer_client, {"slug": "acme"})
    second = _post(buyer_client, {"slug": "acme"})

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Organization.objects.filter(slug="acme").count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_409_and_changes_nothing(buyer_client) -> None:
    _post(buyer_client, {"slug": "acme"})

    response = _post(buyer_client, {"slug": "other"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert not Organization.objects.filter(slug="other").exists()


@pytest.mark.django_db
def test_keys_are_per_organization(buyer_client, make_client) -> None:
    other_client = make_client(BuyerFactory())

    assert _post(buyer_client, {"slug": "mine"}).status_code == 201
    assert _post(other_client, {"slug": "theirs"}).status_code == 201
    assert Organization.objects.filter(slug__in=["mine", "theirs"]).count() == 2


@pytest.mark.django_db
def test_a_refused_request_stores_nothing_and_may_be_retried(buyer_client) -> None:
    refused = _post(buyer_client, {"slug": "acme", "refuse": True})
    assert refused.status_code == 422
    assert not IdempotencyRecord.objects.exists()

    assert _post(buyer_client, {"slug": "acme", "refuse": True}).status_code == 422


@pytest.mark.django_db
def test_without_a_key_every_request_runs(buyer_client) -> None:
    assert _post(buyer_client, {"slug": "a1"}, key=None).status_code == 201
    assert _post(buyer_client, {"slug": "a2"}, key=None).status_code == 201
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["x" * 256, "tab\tkey"])
def test_an_unusable_key_is_a_400(buyer_client, key: str) -> None:
    response = _post(buyer_client, {"slug": "acme"}, key=key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_one_row() -> None:
    buyer = BuyerFactory()
    _, raw_key = api_key_create(organization=buyer, name="t")
    results: list[tuple[int, dict]] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait()
        try:
            response = _post(client, {"slug": "raced"}, key="race-key")
            results.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Organization.objects.filter(slug="raced").count() == 1
    assert {status for status, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
