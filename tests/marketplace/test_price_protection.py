"""A provider sees who a new price reaches before it publishes it; a rise tells the buyers of the
pool's leases in their feed; a buyer's max_price stays binding and can be raised (issue 17,
points 2, 3 and 5)."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from marketplace.dispatch import Requirements
from marketplace.models import FeedEvent, Lease
from marketplace.services import lease_end, lease_start, leases_end_above_max_price, order_place
from pools.models import PricePlan
from tests.billing.test_price_hours import EARLIER, at
from tests.factories import BuyerFactory, pool_factory

pytestmark = pytest.mark.django_db

FLAT = {"peak": Decimal(1), "flat": Decimal(1), "valley": Decimal(1)}


@pytest.fixture
def notice_of_an_hour(settings: Any) -> None:
    """Rises reach running leases an hour after they are made; agents may report up to an hour
    past a booked end, so a lease can run outside its price lock."""
    settings.PRICE_RISE_NOTICE_HOURS = 1
    settings.USAGE_TIME_GRACE_SECONDS = 3600


def on_pool(pool: Any, buyer: Any, *, hours: float = 1, max_price: float | None = None) -> Lease:
    with time_machine.travel(EARLIER, tick=False):
        order = order_place(
            buyer=buyer,
            requirements=Requirements(
                cards=8, duration_hours=hours, workload="training", pool=pool.pk, max_price=max_price
            ),
        )
        lease = order.leases.get()
        return lease_start(lease_id=lease.pk, by="test", now=EARLIER + timedelta(seconds=30))


@pytest.fixture
def pool(provider) -> Any:
    with time_machine.travel(EARLIER - timedelta(minutes=1), tick=False):
        return pool_factory(
            provider=provider, hub_id="jingjinji", province="Beijing", price_per_card_hour=Decimal(20),
            time_of_use=FLAT, cards=100,
        )  # fmt: skip


def extend(client: Any, lease: Lease, end_at: Any, *, now: Any) -> None:
    with time_machine.travel(now, tick=False):
        response = client.patch(f"/api/v1/leases/{lease.pk}/", {"end_at": end_at.isoformat()}, format="json")
    assert response.status_code == 200, response.json()


def post_prices(client: Any, pool: Any, body: dict[str, Any], *, dry_run: bool, now: Any) -> Any:
    with time_machine.travel(now, tick=False):
        suffix = "?dry_run=true" if dry_run else ""
        return client.post(f"/api/v1/pools/{pool.pk}/prices/{suffix}", body, format="json")


def test_the_dry_run_leaves_out_leases_locked_until_their_end_and_changes_nothing(
    pool, provider, buyer, make_client
) -> None:
    running = on_pool(pool, buyer, hours=2)
    scheduled_buyer = BuyerFactory()
    with time_machine.travel(EARLIER, tick=False):
        scheduled = order_place(
            buyer=scheduled_buyer,
            requirements=Requirements(
                cards=8, duration_hours=2, workload="training", pool=pool.pk, earliest_start=at(120)
            ),
        ).leases.get()
    ended = on_pool(pool, BuyerFactory())
    lease_end(lease_id=ended.pk, status=Lease.Status.COMPLETED, reason="test", by="test", now=at(-30))
    with time_machine.travel(EARLIER - timedelta(minutes=1), tick=False):
        other_pool = pool_factory(provider=provider, hub_id="jingjinji", province="Beijing", cards=100)
    on_pool(other_pool, buyer)

    response = post_prices(make_client(provider), pool, {"price_per_card_hour": "100"}, dry_run=True, now=at(-20))

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["dry_run"] is True and body["version"]["version"] == 2 and body["version"]["rise"] is True
    assert body["version"]["running_from"] == (at(-20) + timedelta(hours=24)).isoformat().replace("+00:00", "Z")
    # Every hour of the running and the scheduled lease is booked, so locked: the rise reaches neither
    # (the leases it reaches, extended past their lock, are in test_lease_extension.py).
    assert running.pk and scheduled.pk and body["affected_leases"] == []
    assert PricePlan.objects.filter(pool=pool).count() == 1
    assert not FeedEvent.objects.exists()


def test_a_published_rise_tells_the_buyer_of_a_lease_it_reaches(pool, provider, buyer, make_client) -> None:
    lease = on_pool(pool, buyer, hours=2, max_price=50)
    extend(make_client(buyer), lease, at(-20) + timedelta(hours=30), now=at(-25))  # past the rise's notice

    response = post_prices(make_client(provider), pool, {"price_per_card_hour": "100"}, dry_run=False, now=at(-20))

    assert response.status_code == 201, response.json()
    (event,) = FeedEvent.objects.all()
    assert (event.organization, event.kind, event.lease_id) == (buyer, "price_rise", lease.pk)
    assert event.data["ends_for_max_price"] is True
    with time_machine.travel(at(-19), tick=False):
        feed = make_client(buyer).get("/api/v1/feed/").json()
        others = make_client(BuyerFactory()).get("/api/v1/feed/").json()
    assert [item["lease"] for item in feed["results"]] == [str(lease.pk)]
    assert others["results"] == []


def test_a_decrease_tells_nobody_and_reaches_running_leases_at_once(pool, provider, buyer, make_client) -> None:
    on_pool(pool, buyer, hours=2)

    response = post_prices(make_client(provider), pool, {"price_per_card_hour": "10"}, dry_run=False, now=at(-20))

    body = response.json()
    assert body["version"]["rise"] is False and body["version"]["running_from"] == body["version"]["effective_from"]
    assert not FeedEvent.objects.exists()


def test_a_raised_ceiling_keeps_the_lease_running(pool, provider, buyer, make_client, notice_of_an_hour) -> None:
    lease = on_pool(pool, buyer, hours=1, max_price=25)
    extend(make_client(buyer), lease, at(120), now=at(-55))  # unlocked from HOUR: the rise reaches it at(10)
    post_prices(make_client(provider), pool, {"price_per_card_hour": "100"}, dry_run=False, now=at(-50))

    with time_machine.travel(at(0), tick=False):
        response = make_client(buyer).patch(f"/api/v1/leases/{lease.pk}/", {"max_price": "150"}, format="json")
    with time_machine.travel(at(30), tick=False):
        ended = leases_end_above_max_price()

    assert response.status_code == 200 and response.json()["max_price"] == "150.0000"
    assert ended == 0
    assert Lease.objects.get(pk=lease.pk).status == "running"


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("buyer", {"max_price": "20"}, 422, "max_price_lowered"),
        ("buyer", {"max_price": "abc"}, 400, "validation_error"),
        ("buyer", {"cards": 9}, 400, "unknown_field"),
        ("provider", {"max_price": "150"}, 403, "permission_denied"),
        ("other", {"max_price": "150"}, 404, "not_found"),
    ],
)
def test_a_ceiling_only_its_buyer_raises(pool, provider, buyer, make_client, who, body, status, code) -> None:
    lease = on_pool(pool, buyer, hours=2, max_price=25)
    client = make_client({"buyer": buyer, "provider": provider, "other": BuyerFactory()}[who])

    with time_machine.travel(at(0), tick=False):
        response = client.patch(f"/api/v1/leases/{lease.pk}/", body, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert Lease.objects.get(pk=lease.pk).max_price == Decimal(25)


def test_lifting_the_ceiling_with_null_is_allowed(pool, buyer, make_client) -> None:
    lease = on_pool(pool, buyer, hours=2, max_price=25)

    with time_machine.travel(at(0), tick=False):
        response = make_client(buyer).patch(f"/api/v1/leases/{lease.pk}/", {"max_price": None}, format="json")

    assert response.status_code == 200 and response.json()["max_price"] is None
