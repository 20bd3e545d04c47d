"""An endpoint leaving the market with token orders on it: its cards are never both an endpoint's and
free for card leases, and never given back twice; its buyers' usage is billed up to the moment it ends."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings

from core.exceptions import ConflictError, NotFoundError
from marketplace.models import Lease, Order
from marketplace.services import lease_terminate
from marketplace.token_dispatch import BATCH, TokenRequest
from marketplace.token_services import token_order_place
from pools.endpoints import endpoint_retire, endpoint_suspend
from pools.models import ModelEndpoint, ResourcePool
from pools.services import pool_retire
from tests.marketplace.test_tokens import MODEL, ORDERED, endpoint, ingest, realtime, token_lease, tokens_event

pytestmark = pytest.mark.django_db

__all__ = ["token_lease"]  # the fixture


def reserved(lease: Lease) -> int:
    return ResourcePool.objects.get(pk=lease.pool_id).reserved_cards


def test_an_operators_suspension_ends_the_token_orders_and_gives_the_cards_back_once(
    token_lease, operator, make_client
) -> None:
    # given a running token account on an endpoint of 4 cards (of 16), tokens used before the suspension
    suspended_at = ORDERED + timedelta(minutes=30)
    assert reserved(token_lease) == 4
    client = make_client(operator)
    with time_machine.travel(suspended_at, tick=False):
        # when an operator suspends the endpoint, and the request is sent again
        first = client.post(f"/api/v1/endpoints/{token_lease.endpoint_id}/suspend/", {}, format="json")
        again = client.post(f"/api/v1/endpoints/{token_lease.endpoint_id}/suspend/", {}, format="json")

    # then the order ends now as failed, the cards are back once, and the replay changes nothing
    assert (first.status_code, first.json()["status"]) == (200, "suspended")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_transition")
    lease = Lease.objects.get(pk=token_lease.pk)
    assert (lease.status, lease.end_reason, lease.ended_at) == ("failed", "endpoint_suspended", suspended_at)
    assert Order.objects.get(pk=lease.order_id).status == Order.Status.ENDED
    assert (reserved(lease), ResourcePool.objects.get(pk=lease.pool_id).free_cards) == (0, 16)
    # usage up to the suspension is billed; usage after it (beyond the clock-skew grace) is refused
    grace = timedelta(seconds=settings.USAGE_TIME_GRACE_SECONDS)
    events = [
        tokens_event(lease, "before", suspended_at - timedelta(minutes=1)),
        tokens_event(lease, "after", suspended_at + grace + timedelta(seconds=1)),
    ]
    result = ingest(lease, events, suspended_at + timedelta(minutes=10))
    assert (result.accepted, [error["code"] for error in result.errors]) == (1, ["outside_lease"])
    assert sum(rollup.quantity for rollup in lease.usage_rollups.all()) == 4_000_000


def test_a_suspension_cancels_a_batch_job_not_yet_started(buyer, provider) -> None:
    with time_machine.travel(ORDERED - timedelta(minutes=1), tick=False):
        served = endpoint(provider)
    job = TokenRequest(
        model=MODEL, input_tokens=10**7, output_tokens=10**7, workload=BATCH, deadline=ORDERED + timedelta(hours=20)
    )
    with time_machine.travel(ORDERED, tick=False):  # 10:00 in Beijing: it waits for the night's valley hours
        lease = token_order_place(buyer=buyer, request=job, by="test").leases.get()
        assert lease.status == Lease.Status.SCHEDULED
        endpoint_suspend(endpoint=served, by="operator")

    lease.refresh_from_db()
    assert (lease.status, lease.end_reason, reserved(lease)) == ("cancelled", "endpoint_suspended", 0)


def test_a_provider_cannot_retire_an_endpoint_its_buyers_still_use(token_lease, provider, make_client) -> None:
    client = make_client(provider)
    url = f"/api/v1/endpoints/{token_lease.endpoint_id}/retire/"

    refused = client.post(url, {}, format="json")

    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "endpoint_in_use")
    assert refused.json()["error"]["orders"] == [str(token_lease.order_id)]
    assert ModelEndpoint.objects.get(pk=token_lease.endpoint_id).status == "active"
    assert (reserved(token_lease), Lease.objects.get(pk=token_lease.pk).status) == (4, "running")

    # once the buyer ends its order the provider retires it, and the cards come back once
    lease_terminate(lease=token_lease, organization=token_lease.buyer, by="buyer")
    retired = client.post(url, {}, format="json")
    again = client.post(url, {}, format="json")

    assert (retired.status_code, retired.json()["status"]) == (200, "retired")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_transition")
    assert reserved(token_lease) == 0


def test_no_token_order_is_placed_on_an_endpoint_no_longer_active(token_lease, buyer) -> None:
    served = ModelEndpoint.objects.get(pk=token_lease.endpoint_id)
    endpoint_suspend(endpoint=served, by="operator")

    with pytest.raises(NotFoundError) as refused:
        token_order_place(buyer=buyer, request=realtime(), endpoint_id=served.pk, by="test")

    assert refused.value.code == "endpoint_not_offered"
    assert Lease.objects.filter(endpoint=served, status__in=Lease.ACTIVE).count() == 0


def test_a_pool_whose_cards_an_endpoint_holds_says_so_when_its_provider_retires_it(provider) -> None:
    served = endpoint(provider)

    with pytest.raises(ConflictError) as refused:
        pool_retire(pool=served.pool, by="provider")

    assert refused.value.code == "pool_in_use"
    assert f"4 by its active model endpoints ({MODEL}; retire them first)" in refused.value.message
    assert "leases" not in refused.value.message
    endpoint_retire(endpoint=served, by="provider")
    assert pool_retire(pool=served.pool, by="provider").status == ResourcePool.Status.RETIRED
