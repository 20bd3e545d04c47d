"""In-orbit orders, datasets and contacts through the API; late usage from orbit."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, UsageRollup
from billing.services.invoices import invoices_finalize
from billing.services.usage import usage_rollup_buckets
from marketplace.dispatch import Requirements
from marketplace.models import Lease, OrbitOrder
from marketplace.orbit import orbit_order_place, orbit_quote_for
from marketplace.serializers import OrbitPlanSerializer
from marketplace.services import lease_start, leases_fail_lost_pools, order_place
from orbit.models import Dataset, Satellite
from orbit.reference_data import HUB_CODE
from pools.models import ResourcePool
from tests.factories import BuyerFactory, ProviderFactory, pool_factory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ground() -> Any:
    return pool_factory(cards=10)


def register(client: Any, satellite: Satellite, buyer: Any, size_gb: str = "200") -> dict:
    response = client.post(
        "/api/v1/datasets/",
        {
            "buyer": buyer.slug,
            "satellite": str(satellite.pool_id),
            "size_gb": size_gb,
            "captured_at": (timezone.now() - timedelta(minutes=10)).isoformat(),
            "region": "Poyang Lake flood",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_contacts_of_a_satellite_are_listed_with_station_and_maximum_elevation(constellation, make_client) -> None:
    buyer = make_client(BuyerFactory())
    satellite = constellation[0]
    start = timezone.now()

    body = buyer.get(
        f"/api/v1/pools/{satellite.pool_id}/contacts/",
        {"from": start.isoformat(), "to": (start + timedelta(hours=12)).isoformat()},
    ).json()

    assert body["norad_id"] == satellite.norad_id
    assert len(body["contacts"]) >= 2
    for contact in body["contacts"]:
        assert contact["station"] in {"kashgar", "miyun", "sanya", "jiamusi", "kunming"}
        assert contact["start"] < contact["end"]
        assert 10 <= contact["max_elevation"] <= 90


def test_contacts_refuse_a_window_ending_before_it_starts_or_longer_than_a_week(constellation, make_client) -> None:
    buyer = make_client(BuyerFactory())
    url = f"/api/v1/pools/{constellation[0].pool_id}/contacts/"
    start = timezone.now()

    backwards = buyer.get(url, {"from": start.isoformat(), "to": (start - timedelta(hours=1)).isoformat()})
    too_long = buyer.get(url, {"from": start.isoformat(), "to": (start + timedelta(days=8)).isoformat()})
    garbage = buyer.get(url, {"from": "yesterday"})

    assert [r.status_code for r in (backwards, too_long, garbage)] == [400, 400, 400]
    assert backwards.json()["error"]["code"] == "validation_error"


def test_contacts_of_a_ground_pool_or_another_providers_satellite_are_not_found(constellation, make_client) -> None:
    stranger = make_client(ProviderFactory())
    ground_pool = pool_factory()

    assert stranger.get(f"/api/v1/pools/{constellation[0].pool_id}/contacts/").status_code == 404
    assert make_client(BuyerFactory()).get(f"/api/v1/pools/{ground_pool.pk}/contacts/").status_code == 404


def test_a_provider_registers_datasets_only_on_its_own_satellites_for_a_buyer_who_alone_sees_them(
    constellation, make_client
) -> None:
    owner = make_client(constellation[0].pool.provider)
    stranger = make_client(ProviderFactory())
    buyer, other_buyer = BuyerFactory(), BuyerFactory()

    dataset = register(owner, constellation[0], buyer)
    refused = stranger.post(
        "/api/v1/datasets/",
        {
            "buyer": buyer.slug,
            "satellite": str(constellation[0].pool_id),
            "size_gb": "1",
            "captured_at": timezone.now().isoformat(),
            "region": "x",
        },
        format="json",
    )
    other = make_client(other_buyer)
    foreign_quote = other.post("/api/v1/quotes/", {"dataset": dataset["id"], "result_size_gb": "1"}, format="json")

    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_satellite"
    assert stranger.get(f"/api/v1/datasets/{dataset['id']}/").status_code == 404
    assert stranger.get("/api/v1/datasets/").json()["count"] == 0
    assert other.get(f"/api/v1/datasets/{dataset['id']}/").status_code == 404
    assert foreign_quote.status_code == 422 and foreign_quote.json()["error"]["code"] == "unknown_dataset"
    assert make_client(buyer).get(f"/api/v1/datasets/{dataset['id']}/").json()["buyer"] == buyer.slug
    assert Dataset.objects.count() == 1


def test_ordinary_offers_and_orders_never_use_a_satellite(constellation, ground, make_client) -> None:
    buyer = make_client(BuyerFactory())

    offers = buyer.get("/api/v1/offers/").json()["results"]
    order = order_place(
        buyer=BuyerFactory(), requirements=Requirements(cards=1, duration_hours=2, workload="batch_inference")
    )

    assert {offer["hub"] for offer in offers} == {"ningxia"}
    assert order.leases.get().pool_id == ground.pk


def test_a_deadline_only_in_orbit_compute_can_meet_places_the_work_on_the_satellite(
    constellation, ground, make_client
) -> None:
    """200 GB of imagery: analysed on board in under two hours and its result down at the next
    pass, while the raw data needs some 27 minutes of contact, spread over several passes."""
    buyer_org = BuyerFactory()
    dataset = register(make_client(constellation[3].pool.provider), constellation[3], buyer_org)
    buyer = make_client(buyer_org)
    free = buyer.post("/api/v1/quotes/", {"dataset": dataset["id"], "result_size_gb": "0.5"}, format="json").json()
    in_orbit, downlinked = free["options"]
    assert in_orbit["result_at"] < downlinked["result_at"]
    deadline = datetime.fromisoformat(in_orbit["result_at"]) + timedelta(minutes=1)

    response = buyer.post(
        "/api/v1/orders/",
        {"dataset": dataset["id"], "result_size_gb": "0.5", "deadline": deadline.isoformat()},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    plan = OrbitPlanSerializer(data=body["orbit"])  # the answer holds the schema the API publishes
    assert plan.is_valid(), plan.errors
    assert body["orbit"]["plan"] == "in_orbit"
    quote = body["orbit"]["quote"]
    assert quote["why"] == "only in_orbit delivers the result by the deadline"
    assert [o["meets_deadline"] for o in quote["options"]] == [True, False]
    assert quote["options"][0]["contact_windows"] and quote["options"][1]["contact_windows"]
    assert all(o["estimated_cost"] for o in quote["options"])
    lease = Lease.objects.get(order_id=body["id"])
    assert lease.pool.hub_id == HUB_CODE
    assert lease.pool_id in {s.pool_id for s in constellation[2:5]}  # the holder or a neighbour
    assert Satellite.objects.get(pk=lease.pool_id).pool.reserved_cards == 1


def test_without_a_deadline_the_cheaper_way_is_chosen_and_both_are_explained(constellation, ground) -> None:
    buyer = BuyerFactory()
    dataset = Dataset.objects.create(
        buyer=buyer,
        provider=constellation[0].pool.provider,
        satellite=constellation[0],
        size_gb=Decimal("2"),
        captured_at=timezone.now(),
        region="fields",
    )

    quote = orbit_quote_for(buyer=buyer, dataset_id=dataset.pk, result_size_gb=Decimal("0.1"), deadline=None).render()

    costs = {o["plan"]: Decimal(o["estimated_cost"]) for o in quote["options"]}
    assert quote["chosen"] == min(costs, key=costs.__getitem__)
    assert quote["why"] == f"{quote['chosen']} costs less"
    steps = {o["plan"]: [s["step"] for s in o["steps"]] for o in quote["options"]}
    # in orbit: on the holder, or first over the inter-satellite link to a neighbour that passes sooner
    assert steps["in_orbit"][-2:] == ["compute_in_orbit", "downlink_result"]
    assert steps["in_orbit"][:-2] in ([], ["inter_satellite_link"])
    assert steps["ground"] == ["downlink_raw", "compute_on_ground"]


def test_a_large_dataset_is_downlinked_over_several_passes_before_the_ground_computes(constellation, ground) -> None:
    buyer = BuyerFactory()
    dataset = Dataset.objects.create(
        buyer=buyer,
        provider=constellation[0].pool.provider,
        satellite=constellation[0],
        size_gb=Decimal("400"),
        captured_at=timezone.now(),
        region="wildfire",
    )

    quote = orbit_quote_for(buyer=buyer, dataset_id=dataset.pk, result_size_gb=Decimal("1"), deadline=None).render()

    (ground_way,) = [o for o in quote["options"] if o["plan"] == "ground"]
    windows = ground_way["contact_windows"]
    assert len({w["pass_start"] for w in windows}) >= 5
    assert sum(Decimal(w["gb"]) for w in windows) == pytest.approx(Decimal(400), abs=Decimal("0.01"))
    downlink_step, compute_step = ground_way["steps"]
    assert downlink_step["end"] == windows[-1]["end"]
    assert compute_step["start"] >= downlink_step["end"]


def test_an_unreachable_deadline_is_refused_with_both_ways_and_nothing_reserved(constellation, ground, make_client):
    buyer_org = BuyerFactory()
    dataset = register(make_client(constellation[0].pool.provider), constellation[0], buyer_org, size_gb="400")
    buyer = make_client(buyer_org)

    response = buyer.post(
        "/api/v1/orders/",
        {
            "dataset": dataset["id"],
            "result_size_gb": "1",
            "deadline": (timezone.now() + timedelta(minutes=30)).isoformat(),
        },
        format="json",
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "deadline_unreachable"
    assert len(response.json()["error"]["options"]) == 2
    assert not OrbitOrder.objects.exists() and not Lease.objects.exists()


def _gpu(lease: Lease, event_id: str, at: datetime, quantity: int) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "agent://orbit-04",
        "type": "compute.gpu_seconds",
        "subject": str(lease.pk),
        "time": at.isoformat(),
        "data": {"quantity": quantity},
    }


def _post(client: Any, events: list[dict], at: datetime) -> dict:
    with time_machine.travel(at, tick=False):
        response = client.generic(
            "POST", "/api/v1/usage-events/", orjson.dumps(events), content_type="application/cloudevents-batch+json"
        )
    assert response.status_code == 200, response.content
    return response.json()


def _in_orbit_lease(constellation: list[Satellite], buyer: Any) -> Lease:
    satellite = constellation[3]
    dataset = Dataset.objects.create(
        buyer=buyer,
        provider=satellite.pool.provider,
        satellite=satellite,
        size_gb=Decimal("200"),
        captured_at=timezone.now(),
        region="flood",
    )
    order = orbit_order_place(buyer=buyer, dataset_id=dataset.pk, result_size_gb=Decimal("0.5"), deadline=None)
    lease = order.leases.get()
    assert lease.pool.hub_id == HUB_CODE  # 200 GB: cheaper analysed on board than brought down
    return lease_start(lease_id=lease.pk, by="scheduler", now=lease.start_at)


def test_late_usage_from_orbit_is_billed_once_in_the_hour_of_the_work(constellation, ground, make_client) -> None:
    buyer = BuyerFactory()
    lease = _in_orbit_lease(constellation, buyer)
    provider = make_client(lease.provider)
    worked = lease.start_at + timedelta(minutes=5)
    arrives = worked + timedelta(hours=7)  # at the satellite's next contact with a station
    event = _gpu(lease, "orbit-1", worked, 600)

    first = _post(provider, [event], arrives)
    again = _post(provider, [event], arrives + timedelta(hours=1))
    usage_rollup_buckets(buckets=[(lease.pk, worked.replace(minute=0, second=0, microsecond=0))])

    assert (first["accepted"], again["accepted"], again["duplicates"]) == (1, 0, 1)
    (row,) = UsageRollup.objects.filter(lease=lease)
    assert row.hour == worked.replace(minute=0, second=0, microsecond=0)
    assert row.quantity == Decimal(600)


def test_usage_from_orbit_later_than_the_lateness_window_is_refused(constellation, ground, make_client) -> None:
    lease = _in_orbit_lease(constellation, BuyerFactory())
    worked = lease.start_at + timedelta(minutes=5)
    late = worked + timedelta(hours=settings.ORBIT_USAGE_LATENESS_HOURS, minutes=1)

    client = make_client(lease.provider)
    edge = worked + timedelta(hours=settings.ORBIT_USAGE_LATENESS_HOURS)

    answer = _post(client, [_gpu(lease, "orbit-2", worked, 600)], late)
    on_the_edge = _post(client, [_gpu(lease, "orbit-2b", worked, 600)], edge)

    assert answer["accepted"] == 0
    assert answer["errors"][0]["code"] == "too_late"
    assert on_the_edge["accepted"] == 1  # the window's last second still counts


def test_late_usage_from_orbit_for_a_finalized_month_is_an_adjustment_line(constellation, ground, make_client) -> None:
    """Work at 22:05 on 31 March (Asia/Shanghai); March is finalized at 01:00 on 1 April; the satellite's
    report of that work arrives at 01:30, at its next contact: billed once, on April's invoice, as an
    adjustment at March's rate for that hour."""
    buyer = BuyerFactory()
    with time_machine.travel(datetime(2026, 3, 31, 14, 0, tzinfo=UTC), tick=False):
        lease = _in_orbit_lease(constellation, buyer)
    provider = make_client(lease.provider)
    worked = lease.start_at + timedelta(minutes=5)
    hour = worked.replace(minute=0, second=0, microsecond=0)
    _post(provider, [_gpu(lease, "orbit-3", worked, 300)], worked + timedelta(minutes=1))
    usage_rollup_buckets(buckets=[(lease.pk, hour)])
    march = Invoice.objects.get(buyer=buyer)
    april_starts = march.period_end
    invoices_finalize(invoice_ids=[march.pk], now=april_starts + timedelta(hours=1))

    late_event = _gpu(lease, "orbit-4", worked + timedelta(minutes=1), 200)
    answer = _post(provider, [late_event], april_starts + timedelta(hours=1, minutes=30))
    replay = _post(provider, [late_event], april_starts + timedelta(hours=2))
    with time_machine.travel(april_starts + timedelta(hours=2), tick=False):
        usage_rollup_buckets(buckets=[(lease.pk, hour)])
    april = Invoice.objects.exclude(pk=march.pk).get(buyer=buyer)
    invoices_finalize(invoice_ids=[april.pk], now=april.period_end + timedelta(hours=1))

    assert (answer["accepted"], replay["duplicates"]) == (1, 1)
    assert UsageRollup.objects.get(lease=lease, late=True).hour == hour
    (usage_line,) = march.lines.all()
    (adjustment,) = april.lines.all()
    assert (usage_line.kind, round(usage_line.quantity * 3600)) == (InvoiceLine.Kind.USAGE, 300)
    assert (adjustment.kind, round(adjustment.quantity * 3600)) == (InvoiceLine.Kind.ADJUSTMENT, 200)
    assert adjustment.rate == usage_line.rate


def test_a_satellite_silent_between_passes_keeps_its_leases(constellation, ground) -> None:
    lease = _in_orbit_lease(constellation, BuyerFactory())
    ResourcePool.objects.filter(pk=lease.pool_id).update(last_heartbeat_at=timezone.now() - timedelta(hours=3))

    failed = leases_fail_lost_pools(now=timezone.now(), lost_after_seconds=settings.LEASE_POOL_LOST_SECONDS)

    lease.refresh_from_db()
    assert (failed, lease.status) == (0, Lease.Status.RUNNING)


def test_when_the_holders_computer_is_taken_a_neighbour_computes_over_the_inter_satellite_link(
    constellation, ground
) -> None:
    buyer = BuyerFactory()
    holder = constellation[6]
    dataset = Dataset.objects.create(
        buyer=buyer,
        provider=holder.pool.provider,
        satellite=holder,
        size_gb=Decimal(200),
        captured_at=timezone.now(),
        region="flood",
    )
    neighbours = {constellation[5].pool_id, constellation[7].pool_id}
    ResourcePool.objects.filter(pk=holder.pool_id).update(reserved_cards=1)  # busy with other work

    order = orbit_order_place(buyer=buyer, dataset_id=dataset.pk, result_size_gb=Decimal("0.5"))

    (in_orbit, _) = order.orbit.quote["options"]
    assert order.orbit.plan == "in_orbit"
    assert order.leases.get().pool_id in neighbours
    link, compute, _ = in_orbit["steps"]
    assert link["step"] == "inter_satellite_link"
    assert compute["start"] == link["end"]  # 200 GB at 100 Gbps: 16 seconds
    assert (datetime.fromisoformat(link["end"]) - datetime.fromisoformat(link["start"])).total_seconds() == 16
