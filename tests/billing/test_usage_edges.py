"""Usage billed outside a lease's booking, or beyond what its cards can do (issue 15, points 3 to 6),
each tried as it was found: through the API, with the clock moved by time_machine."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
import time_machine
from django.conf import settings
from prometheus_client import REGISTRY

from billing.models import Invoice, UsageEvent, UsageMetric
from billing.services.invoices import invoice_for_period, invoices_finalize
from billing.services.reconcile import reconcile
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_start, order_place
from pools.models import PricePlan
from pools.reference_data import TOKENS_PER_SECOND
from tests.billing.conftest import running_token_lease
from tests.billing.factories import leased, usage
from tests.factories import ProviderFactory, pool_factory

pytestmark = pytest.mark.django_db

URL = "/api/v1/usage-events/"
T0 = datetime(2026, 3, 10, 2, 30, tzinfo=UTC)  # half past an hour: the cases below stay in one hour


def booked(buyer: Any, provider: Any, *, cards: int, hours: float, start: datetime | None = None) -> Lease:
    """A lease of ``cards`` on a new pool of ``provider``, placed at T0 for ``hours`` from ``start``."""
    with time_machine.travel(T0, tick=False):
        pool = pool_factory(provider=provider, cards=100)
        order = order_place(
            buyer=buyer,
            requirements=Requirements(
                cards=cards, duration_hours=hours, workload="training", earliest_start=start, pool=pool.pk
            ),
        )
    return order.leases.get()


def gpu(lease: Lease, event_id: str, at: datetime, quantity: float, *, source: str = "agent://a") -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "compute.gpu_seconds",
        "subject": str(lease.pk),
        "time": at.isoformat(),
        "data": {"quantity": quantity},
    }


def tokens(lease: Lease, event_id: str, at: datetime, count: int) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "agent://a",
        "type": "compute.tokens",
        "subject": str(lease.pk),
        "time": at.isoformat(),
        "data": {"model": "qwen3-0.6b", "input_tokens": count, "output_tokens": count},
    }


def post(client: Any, events: list[dict], *, at: datetime) -> dict:
    with time_machine.travel(at, tick=False):
        response = client.generic("POST", URL, orjson.dumps(events), content_type="application/cloudevents-batch+json")
    assert response.status_code == 200, response.content
    return response.json()


# --- 3. a lease starts at its booked start, and bills only its run ------------------------------


def test_a_lease_booked_three_days_ahead_cannot_be_started_now_nor_bill_usage(buyer, provider, make_client) -> None:  # type: ignore[no-untyped-def]
    # given a 2-hour lease booked to start in 3 days
    lease = booked(buyer, provider, cards=1, hours=2, start=T0 + timedelta(days=3))
    client = make_client(provider)

    # when its provider starts it at once and reports usage from then
    with time_machine.travel(T0, tick=False):
        started = client.post(f"/api/v1/leases/{lease.pk}/start/")
    answer = post(client, [gpu(lease, "e1", T0 + timedelta(minutes=5), 60)], at=T0 + timedelta(minutes=6))

    # then the start is refused, the lease waits for its time, and no usage is billed
    assert started.status_code == 409
    assert started.json()["error"]["code"] == "lease_not_due"
    lease.refresh_from_db()
    assert (lease.status, lease.started_at) == (Lease.Status.SCHEDULED, None)
    assert [error["code"] for error in answer["errors"]] == ["lease_not_started"]


def test_a_lease_may_start_a_few_minutes_before_its_booked_start(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    lease = booked(buyer, provider, cards=1, hours=2, start=T0 + timedelta(hours=1))
    early = timedelta(seconds=settings.LEASE_START_EARLY_SECONDS)

    started = lease_start(lease_id=lease.pk, by="test", now=lease.start_at - early)

    assert started.status == Lease.Status.RUNNING


def test_usage_after_the_booked_end_is_refused_while_the_lease_is_not_yet_ended(  # type: ignore[no-untyped-def]
    buyer, provider, make_client
) -> None:
    # given a 1-hour lease started on time, still running after its booked end (the scheduler is late)
    lease = booked(buyer, provider, cards=1, hours=1)
    lease_start(lease_id=lease.pk, by="test", now=lease.start_at)
    grace = timedelta(seconds=settings.USAGE_TIME_GRACE_SECONDS)

    # when usage comes for the half hour after its end
    answer = post(
        make_client(provider),
        [gpu(lease, "in", lease.end_at - timedelta(minutes=1), 60), gpu(lease, "after", lease.end_at + 2 * grace, 60)],
        at=lease.end_at + 3 * grace,
    )

    # then only the usage inside the booked run is kept
    assert [(error["id"], error["code"]) for error in answer["errors"]] == [("after", "outside_lease")]
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["in"]


# --- 4. an hour bills at most the seconds the lease ran in it ------------------------------------


def test_a_two_card_lease_that_ran_two_seconds_bills_at_most_two_seconds_and_the_allowance(  # type: ignore[no-untyped-def]
    buyer, provider, make_client
) -> None:
    # given a 2-card lease that the provider started and ended two seconds later
    lease = booked(buyer, provider, cards=2, hours=2)
    client = make_client(provider)
    with time_machine.travel(T0, tick=False):
        assert client.post(f"/api/v1/leases/{lease.pk}/start/").status_code == 200
    with time_machine.travel(T0 + timedelta(seconds=2), tick=False):
        assert client.post(f"/api/v1/leases/{lease.pk}/terminate/").status_code == 200

    # when it reports a minute of both cards every 30 seconds around those two seconds
    events = [gpu(lease, f"e{i}", T0 - timedelta(seconds=540 - 30 * i), 120) for i in range(36)]
    post(client, events, at=T0 + timedelta(minutes=15))

    # then the hour holds at most 2 cards x (2 s + the clock-skew allowance), not 4,320 card-seconds
    billed = sum(UsageEvent.objects.values_list("quantity", flat=True))
    limit = 2 * (2 + settings.USAGE_TIME_GRACE_SECONDS) * (1 + settings.USAGE_HOURLY_TOLERANCE)
    assert 0 < billed <= limit


def test_the_hour_a_lease_starts_in_bills_the_minutes_it_ran_not_the_whole_hour(  # type: ignore[no-untyped-def]
    buyer, provider, make_client
) -> None:
    # given an 8-card lease started 10 minutes before the end of an hour
    lease = booked(buyer, provider, cards=8, hours=4, start=T0 + timedelta(minutes=20))
    lease_start(lease_id=lease.pk, by="test", now=lease.start_at)
    hour = lease.start_at.replace(minute=0, second=0, microsecond=0)

    # when a full hour of its cards is reported in the ten minutes it ran in that hour
    answer = post(
        make_client(provider),
        [gpu(lease, f"e{minute}", hour + timedelta(minutes=minute), 8 * 360) for minute in range(50, 60)],
        at=hour + timedelta(hours=2),
    )

    # then only the minutes it ran (and the allowance) are kept
    allowed = 8 * (600 + settings.USAGE_TIME_GRACE_SECONDS) * (1 + settings.USAGE_HOURLY_TOLERANCE)
    kept = sum(UsageEvent.objects.values_list("quantity", flat=True))
    assert allowed - 8 * 360 < kept <= allowed
    assert {error["code"] for error in answer["errors"]} == {"hourly_limit_exceeded"}


# --- 5. tokens are bounded by what the endpoint's cards serve ------------------------------------

THROUGHPUT = 10_000  # tokens per second per card of the endpoint, which dedicates 4 cards


def token_order(buyer: Any, provider: Any) -> Lease:
    with time_machine.travel(T0, tick=False):
        return running_token_lease(buyer=buyer, provider=provider, model="qwen3-0.6b", throughput=THROUGHPUT)


def test_a_token_flood_on_a_token_order_is_refused_past_its_endpoints_throughput(  # type: ignore[no-untyped-def]
    buyer, provider, make_client
) -> None:
    # given a token order on an endpoint of 4 cards, running for hours
    lease = token_order(buyer, provider)
    hour = T0.replace(minute=0) + timedelta(hours=2)

    # when its provider reports 100 events of 2e10 tokens in one hour
    answer = post(
        make_client(provider),
        [tokens(lease, f"t{i}", hour + timedelta(seconds=30 * i), 10**10) for i in range(100)],
        at=hour + timedelta(hours=1),
    )

    # then the hour keeps at most the endpoint's throughput per card x its cards x 3,600
    kept = sum(e.input_tokens + e.output_tokens for e in UsageEvent.objects.all())
    assert kept <= THROUGHPUT * 4 * 3600
    assert answer["rejected"] == 100 - answer["accepted"] > 0
    assert {error["code"] for error in answer["errors"]} == {"hourly_token_limit_exceeded"}


def test_tokens_within_the_endpoints_throughput_are_kept(buyer, provider, make_client) -> None:  # type: ignore[no-untyped-def]
    lease = token_order(buyer, provider)
    hour = T0.replace(minute=0) + timedelta(hours=2)
    per_event = THROUGHPUT * 4 * 60 // 2  # a minute of the endpoint at full speed, in + out

    answer = post(
        make_client(provider),
        [tokens(lease, f"t{i}", hour + timedelta(minutes=i), per_event) for i in range(60)],
        at=hour + timedelta(hours=1),
    )

    assert (answer["accepted"], answer["errors"]) == (60, [])


def flooded(buyer: Any, provider: Any, *, hours: int, tokens: int) -> Lease:
    """The state a token flood left before ingest capped tokens: rollups of ``tokens`` an hour,
    at a token price of 20,000 yuan per million, in March 2026."""
    lease = leased(buyer=buyer, provider=provider, at=datetime(2026, 2, 20, tzinfo=UTC))
    PricePlan.objects.filter(pool_id=lease.pool_id).update(token_prices={"m": {"input": "20000", "output": "1"}})
    for hour in range(hours):
        usage(lease, datetime(2026, 3, 2, hour, tzinfo=UTC), seconds=tokens, metric=UsageMetric.INPUT_TOKENS, model="m")
    return lease


def test_a_token_flood_on_the_books_is_reported_by_reconcile(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    # given 2e13 tokens in an hour of an 8-card lease (what a flood of events of 2e10 left)
    lease = flooded(buyer, provider, hours=1, tokens=2 * 10**13)

    differences = reconcile()

    limit = 8 * 3600 * TOKENS_PER_SECOND["H100-80G"] * settings.USAGE_TOKENS_HEADROOM
    assert [(d.check, d.ledger, d.expected) for d in differences] == [
        ("usage beyond the lease", 2 * 10**13, int(limit))
    ]
    assert str(lease.pk) in differences[0].subject


def test_an_invoice_that_cannot_be_finalized_is_set_aside_and_the_rest_of_its_batch_is_finalized(  # type: ignore[no-untyped-def]
    buyer, other_buyer, provider, django_capture_on_commit_callbacks
) -> None:
    # given a buyer whose flooded usage sums past bigint, and another buyer with ordinary usage
    flooded(buyer, provider, hours=10, tokens=9 * 10**17)
    ordinary = leased(buyer=other_buyer, provider=provider, at=datetime(2026, 2, 20, tzinfo=UTC))
    usage(ordinary, datetime(2026, 3, 2, 4, tzinfo=UTC), seconds=3600)
    invoices = [invoice_for_period(buyer=b, at=datetime(2026, 3, 15, tzinfo=UTC)) for b in (buyer, other_buyer)]
    before = REGISTRY.get_sample_value("grid_invoices_set_aside_total") or 0

    # when month end finalizes them in one batch
    with django_capture_on_commit_callbacks(execute=True):
        finalized = invoices_finalize(invoice_ids=[i.pk for i in invoices], now=datetime(2026, 4, 5, tzinfo=UTC))

    # then the other buyer's invoice is finalized; the flooded one is set aside, a draft, with an alarm
    statuses = {i.buyer_id: Invoice.objects.get(pk=i.pk).status for i in invoices}
    assert finalized == 1
    assert statuses == {buyer.pk: Invoice.Status.DRAFT, other_buyer.pk: Invoice.Status.FINALIZED}
    assert REGISTRY.get_sample_value("grid_invoices_set_aside_total") == before + 1
    # and the draft keeps why, which reconcile lists with it
    held = Invoice.objects.get(pk=invoices[0].pk)
    assert held.hold_reason.startswith("finalizing it failed: DataError")
    assert [d.subject for d in reconcile() if d.check == "invoice set aside"] == [
        f"{held.pk} of buyer {buyer.pk} from {held.period_start:%Y-%m-%d}: {held.hold_reason}"
    ]


# --- 6. exactly-once is per provider ----------------------------------------------------------------


def test_another_providers_event_with_the_same_source_and_id_neither_blocks_nor_learns_of_the_real_one(  # type: ignore[no-untyped-def]
    buyer, provider, make_client
) -> None:
    # given provider A's lease and provider B's lease
    intruder = ProviderFactory()
    mine = booked(buyer, provider, cards=1, hours=24)
    theirs = booked(buyer, intruder, cards=1, hours=24)
    for lease in (mine, theirs):
        lease_start(lease_id=lease.pk, by="test", now=lease.start_at)
    at = T0 + timedelta(minutes=10)

    # when B posts an event with A's source and id first, then A its real event, then B again other content
    first = post(make_client(intruder), [gpu(theirs, "e1", at, 30, source="agent://a")], at=at)
    real = post(make_client(provider), [gpu(mine, "e1", at, 60, source="agent://a")], at=at)
    probe = post(make_client(intruder), [gpu(theirs, "e1", at, 45, source="agent://a")], at=at)

    # then A's event is billed to A's lease; B learns nothing of it (its own key answers as its own)
    assert (first["accepted"], real["accepted"]) == (1, 1)
    assert real["errors"] == []
    assert [error["code"] for error in probe["errors"]] == ["conflict"]  # against B's own first event
    assert UsageEvent.objects.get(lease=mine).quantity == Decimal(60)
    assert UsageEvent.objects.get(lease=theirs).quantity == Decimal(30)
    assert UsageEvent.objects.filter(source="agent://a", event_id="e1").count() == 2


def test_a_provider_probing_another_providers_key_gets_the_answer_of_a_new_event(  # type: ignore[no-untyped-def]
    buyer, provider, make_client
) -> None:
    intruder = ProviderFactory()
    mine = booked(buyer, provider, cards=1, hours=24)
    theirs = booked(buyer, intruder, cards=1, hours=24)
    for lease in (mine, theirs):
        lease_start(lease_id=lease.pk, by="test", now=lease.start_at)
    at = T0 + timedelta(minutes=10)
    post(make_client(provider), [gpu(mine, "e1", at, 60, source="agent://a")], at=at)

    probe = post(make_client(intruder), [gpu(theirs, "e1", at, 45, source="agent://a")], at=at)

    assert (probe["accepted"], probe["duplicates"], probe["errors"]) == (1, 0, [])
