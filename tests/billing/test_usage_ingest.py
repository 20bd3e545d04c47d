import threading
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import UsageEvent, UsageRollup, UsageRollupDue
from billing.services.usage import (
    usage_events_ingest,
    usage_rollup_buckets,
    usage_rollups_overdue,
    usage_rollups_rebuild,
)
from organizations.services import api_key_create
from tests.billing.conftest import gpu_event, running_lease, token_event
from tests.factories import BuyerFactory, ProviderFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/usage-events/"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture
def provider_client(provider, make_client):  # type: ignore[no-untyped-def]
    return make_client(provider)


def send(client, events, content_type: str = BATCH):  # type: ignore[no-untyped-def]
    return client.generic("POST", URL, orjson.dumps(events), content_type=content_type)


def test_a_batch_of_good_events_is_stored_once_each(provider_client, lease, token_lease) -> None:
    events = [gpu_event(lease, f"e{i}", minutes_ago=10 + i) for i in range(5)] + [token_event(token_lease, "t1")]

    response = send(provider_client, events)

    assert response.status_code == 200
    assert response.json() == {"accepted": 6, "duplicates": 0, "rejected": 0, "errors": []}
    assert UsageEvent.objects.count() == 6
    stored = UsageEvent.objects.get(event_id="t1")
    assert (stored.model, stored.input_tokens, stored.output_tokens) == ("qwen3-72b", 1000, 200)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"specversion": "0.3"}, "unsupported_specversion"),
        ({"id": ""}, "missing_attribute"),
        ({"source": None}, "missing_attribute"),
        ({"type": "compute.bitcoin"}, "unknown_type"),
        ({"subject": "not-a-lease"}, "invalid_subject"),
        ({"subject": "7f4c3f2e-0000-4000-8000-000000000001"}, "unknown_lease"),
        ({"time": "yesterday"}, "invalid_time"),
        ({"time": "2026-03-01T08:00:00"}, "invalid_time"),
        ({"data": "480"}, "invalid_data"),
        ({"data": {"quantity": -1}}, "invalid_quantity"),
        ({"data": {"quantity": "NaN"}}, "invalid_quantity"),
        ({"data": {"quantity": True}}, "invalid_quantity"),
        ({"data": {"quantity": 1e300}}, "quantity_implausible"),
        ({"data": {"quantity": 8 * 3600 + 1}}, "quantity_implausible"),
        ({"data": {"quantity": 60, "cards": 9}}, "cards_exceed_lease"),
        ({"data": {"quantity": 60, "cards": 0}}, "invalid_cards"),
    ],
)
def test_each_bad_event_is_rejected_with_its_code_and_the_rest_kept(provider_client, lease, change, code) -> None:  # type: ignore[no-untyped-def]
    events = [gpu_event(lease, "good"), {**gpu_event(lease, "bad"), **change}]

    body = send(provider_client, events).json()

    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["code"] == code
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["good"]


def _in_offset(event: dict, hours: int) -> dict:
    """The event's own moment, written with another UTC offset."""
    from datetime import datetime
    from datetime import timezone as tz

    moment = datetime.fromisoformat(event["time"]).astimezone(tz(timedelta(hours=hours)))
    return {**event, "time": moment.isoformat()}


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (lambda lease: gpu_event(lease, "bad", source="agent://a\x00b"), "invalid_text"),
        (lambda lease: gpu_event(lease, "bad\x00"), "invalid_text"),
        (lambda lease: token_event(lease, "bad", model="qwen\x00"), "invalid_text"),
        (lambda lease: gpu_event(lease, "bad", data={"quantity": 60, "note": "\x00"}), "invalid_text"),
        (lambda lease: gpu_event(lease, "bad", data={"quantity": 60, "no\x00te": 1}), "invalid_text"),
        (lambda lease: gpu_event(lease, "bad", data={"quantity": 60, "deep": [{"a": ["\x00"]}]}), "invalid_text"),
        (lambda lease: _in_offset(gpu_event(lease, "bad"), 16), "invalid_time"),
        (lambda lease: _in_offset(gpu_event(lease, "bad"), -16), "invalid_time"),
        (lambda lease: gpu_event(lease, "bad", time="0001-01-01T00:00:00+01:00"), "invalid_time"),
        (lambda lease: gpu_event(lease, "bad", time="9999-12-31T23:59:59-01:00"), "invalid_time"),
        (lambda lease: gpu_event(lease, "bad", time="0001-01-01T00:00:00Z"), "invalid_time"),
    ],
    ids=["nul-source", "nul-id", "nul-model", "nul-data", "nul-data-key", "nul-deep-in-data", "offset+16",
         "offset-16", "year-1", "year-9999", "year-1-utc"],
)  # fmt: skip
def test_an_event_postgresql_cannot_store_is_rejected_alone_and_its_batch_kept(
    provider_client, lease, bad, code
) -> None:  # type: ignore[no-untyped-def]
    # given good events on both sides of one that PostgreSQL cannot store (a NUL, an offset of 16 hours)
    good = [gpu_event(lease, "good-1", minutes_ago=20), gpu_event(lease, "good-2", minutes_ago=10)]
    events = [good[0], bad(lease), good[1]]

    # when they are sent in one batch
    response = send(provider_client, events)

    # then the bad one is rejected with its code, and the good ones are stored
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [(error["index"], error["code"]) for error in body["errors"]] == [(1, code)]
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"good-1", "good-2"}
    # and sent again, the good ones are duplicates, not new events
    again = send(provider_client, good).json()
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert UsageEvent.objects.count() == 2


def test_times_in_any_offset_and_fractional_quantities_are_stored_as_the_moments_and_amounts_sent(
    provider_client, lease
) -> None:
    # given the same kind of event with its time in several offsets and forms, and fractional card-seconds
    moment = (timezone.now() - timedelta(minutes=30)).replace(microsecond=250_000)
    forms = {
        "utc-z": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "east-8": _in_offset({"time": moment.isoformat()}, 8)["time"],
        "west-3.5": moment.astimezone(timezone.get_fixed_timezone(-210)).isoformat(),
        "upper-subject": moment.isoformat(),
    }
    events = [gpu_event(lease, name, 60.5, time=time) for name, time in forms.items()]
    events[-1]["subject"] = str(lease.pk).upper()

    # when they are sent (parsed times and subjects are remembered between events and batches)
    for _ in range(2):
        response = send(provider_client, events)
        assert response.status_code == 200, response.content

    # then each is stored once at the same instant, on its lease, with the amount sent
    assert response.json()["duplicates"] == 4
    stored = UsageEvent.objects.order_by("event_id").values_list("event_id", "time", "lease_id", "quantity")
    assert [(name, time, lease_id, quantity) for name, time, lease_id, quantity in stored] == [
        (name, moment, lease.pk, Decimal("60.5")) for name in sorted(forms)
    ]


def test_one_structured_event_with_a_nul_is_rejected_not_a_500(provider_client, lease) -> None:
    response = send(provider_client, gpu_event(lease, "bad", source="a\x00"), "application/cloudevents+json")

    assert response.status_code == 200
    assert response.json()["errors"][0]["code"] == "invalid_text"
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("headers", "data", "code"),
    [
        ({"id": "b\x00"}, {"quantity": 60}, "invalid_text"),
        ({"source": "agent://\x00"}, {"quantity": 60}, "invalid_text"),
        ({}, {"quantity": 60, "note": "a\x00b"}, "invalid_text"),
        ({"time": "2026-03-18T22:00:00+16:00"}, {"quantity": 60}, "invalid_time"),
    ],
    ids=["nul-id", "nul-source", "nul-data", "offset+16"],
)
def test_a_binary_mode_event_postgresql_cannot_store_is_rejected_not_a_500(
    provider_client, lease, headers, data, code
) -> None:  # type: ignore[no-untyped-def]
    event = {**gpu_event(lease, "b1"), **headers}
    extra = {
        f"HTTP_CE_{name.upper()}": event[name] for name in ("specversion", "id", "source", "type", "subject", "time")
    }

    response = provider_client.generic("POST", URL, orjson.dumps(data), content_type="application/json", **extra)

    assert response.status_code == 200, response.content
    assert response.json()["rejected"] == 1
    assert response.json()["errors"][0]["code"] == code
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"input_tokens": -5}, "invalid_tokens"),
        ({"output_tokens": 1.5}, "invalid_tokens"),
        ({"model": ""}, "invalid_tokens"),
        ({"input_tokens": 10**11}, "invalid_tokens"),
    ],
)
def test_bad_token_counts_are_rejected(provider_client, token_lease, data, code) -> None:  # type: ignore[no-untyped-def]
    body = send(provider_client, [token_event(token_lease, "t", **data)]).json()

    assert body["errors"][0]["code"] == code
    assert not UsageEvent.objects.exists()


def test_events_outside_the_leases_run_or_in_the_future_are_rejected(provider_client, lease) -> None:
    events = [
        gpu_event(lease, "before", minutes_ago=5 * 60),
        gpu_event(lease, "future", minutes_ago=-10),
        gpu_event(lease, "soon", minutes_ago=-4),
    ]

    body = send(provider_client, events).json()

    assert [(e["id"], e["code"]) for e in body["errors"]] == [("before", "outside_lease"), ("future", "time_in_future")]
    assert body["accepted"] == 1


def test_another_providers_lease_is_refused_like_an_unknown_one(provider_client, buyer) -> None:
    foreign = running_lease(buyer=buyer, provider=ProviderFactory())

    body = send(provider_client, [gpu_event(foreign, "x")]).json()

    assert body["errors"] == [
        {"index": 0, "id": "x", "code": "unknown_lease", "message": "No lease with this id runs on your pools."}
    ]
    assert not UsageEvent.objects.exists()


def test_a_lease_cannot_bill_more_card_seconds_in_an_hour_than_it_leased(provider_client, lease) -> None:
    hour_start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)

    def at(minute: int, event_id: str, quantity: int) -> dict:
        return {**gpu_event(lease, event_id, quantity), "time": (hour_start + timedelta(minutes=minute)).isoformat()}

    first = send(provider_client, [at(5, "a", 3600 * 4), at(20, "b", 3600 * 4)]).json()
    second = send(provider_client, [at(40, "c", 3600), at(50, "d", 100)]).json()

    assert first["accepted"] == 2
    assert second["accepted"] == 1
    assert [(e["id"], e["code"]) for e in second["errors"]] == [("c", "hourly_limit_exceeded")]


def test_an_event_refused_over_the_limit_stays_out_when_more_batches_come_in_the_same_transaction(lease) -> None:
    # Found by the money state machine: the staging table kept the refused event until commit,
    # and the next batch of the same transaction stored it after all.
    hour_start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    full = {**gpu_event(lease, "full", 3600 * 8), "time": (hour_start + timedelta(minutes=5)).isoformat()}
    over = {**gpu_event(lease, "over", 3600), "time": (hour_start + timedelta(minutes=40)).isoformat()}

    with transaction.atomic():
        first = usage_events_ingest(provider_id=lease.provider_id, events=[full, over])
        next_hour = {**gpu_event(lease, "later", 60), "time": (hour_start + timedelta(minutes=65)).isoformat()}
        later = usage_events_ingest(provider_id=lease.provider_id, events=[next_hour])

    assert (first.accepted, [e["id"] for e in first.errors]) == (1, ["over"])
    assert (later.accepted, later.errors) == (1, [])
    assert sorted(UsageEvent.objects.values_list("event_id", flat=True)) == ["full", "later"]


def test_the_same_batch_three_times_stores_each_event_once(provider_client, lease) -> None:
    events = [gpu_event(lease, f"e{i}") for i in range(3)]

    answers = [send(provider_client, events).json() for _ in range(3)]

    assert [(a["accepted"], a["duplicates"]) for a in answers] == [(3, 0), (0, 3), (0, 3)]
    assert UsageEvent.objects.count() == 3


def test_the_same_key_with_other_content_is_a_conflict_and_kept_out(provider_client, lease) -> None:
    send(provider_client, [gpu_event(lease, "e1", 480)])

    body = send(
        provider_client, [gpu_event(lease, "e1", 999), gpu_event(lease, "e1", 1, source="agent://other")]
    ).json()

    assert (body["accepted"], body["duplicates"]) == (1, 0)
    assert [(e["id"], e["code"]) for e in body["errors"]] == [("e1", "conflict")]
    assert UsageEvent.objects.get(source="agent://test/pool").quantity == Decimal(480)


def test_a_duplicate_inside_one_batch_is_counted_once(provider_client, lease) -> None:
    event = gpu_event(lease, "e1")

    body = send(provider_client, [event, event]).json()

    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, 0)


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_from_four_threads_at_once_stores_each_event_once() -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    lease = running_lease(buyer=buyer, provider=provider)
    _, raw_key = api_key_create(organization=provider, name="agent")
    events = [gpu_event(lease, f"e{i}", 60, minutes_ago=1 + i / 2) for i in range(200)]
    answers: list[dict] = []
    barrier = threading.Barrier(4)

    def post() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        barrier.wait()
        try:
            answers.append(send(client, events).json())
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert UsageEvent.objects.count() == 200
    assert sum(a["accepted"] for a in answers) == 200
    assert sum(a["duplicates"] for a in answers) == 600


def test_more_than_10000_events_is_a_413_that_says_the_limit(provider_client, lease) -> None:
    event = gpu_event(lease, "e")

    response = send(provider_client, [event] * 10_001)

    assert response.status_code == 413
    assert "10,000 events" in response.json()["error"]["message"]
    assert not UsageEvent.objects.exists()


def test_a_body_over_10_mb_is_a_413(provider_client) -> None:
    response = provider_client.generic("POST", URL, b"[" + b" " * (10 * 1024 * 1024) + b"]", content_type=BATCH)

    assert response.status_code == 413
    assert "10 MB" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", BATCH, 400, "malformed_json"),
        (b"[" * 1000 + b"]" * 1000, BATCH, 400, "json_too_deep"),
        (b"[" * 40 + b"]" * 40, BATCH, 400, "json_too_deep"),
        (b'[{"id": "\\ud800"}]', BATCH, 400, "invalid_text"),
        (b'{"a": 1}', BATCH, 400, "invalid_request"),
        (b"[]", BATCH, 400, "empty_batch"),
        (b"[1]", "text/csv", 415, "unsupported_media_type"),
        (b"[1, 2]", "application/cloudevents+json", 400, "invalid_request"),
    ],
)
def test_requests_that_are_not_cloudevents_at_all_are_refused(
    provider_client, body, content_type, status, code
) -> None:  # type: ignore[no-untyped-def]
    response = provider_client.generic("POST", URL, body, content_type=content_type)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_buyers_cannot_report_usage(buyer_client, lease) -> None:
    assert send(buyer_client, [gpu_event(lease, "e")]).status_code == 403


def test_a_plain_json_array_and_one_structured_event_are_accepted(provider_client, lease) -> None:
    assert send(provider_client, [gpu_event(lease, "a")], "application/json").json()["accepted"] == 1
    assert send(provider_client, gpu_event(lease, "b"), "application/cloudevents+json").json()["accepted"] == 1


def test_events_made_and_sent_with_the_official_cloudevents_sdk_are_accepted(provider_client, lease) -> None:
    from cloudevents.v1.conversion import to_binary, to_structured
    from cloudevents.v1.http import CloudEvent

    def sdk_event(event_id: str) -> CloudEvent:
        attributes = {
            "type": "compute.gpu_seconds",
            "source": "agent://sdk",
            "id": event_id,
            "subject": str(lease.pk),
            "time": (timezone.now() - timedelta(minutes=5)).isoformat(),
        }
        return CloudEvent(attributes, {"quantity": 120, "cards": 2})

    headers, body = to_structured(sdk_event("s1"))
    structured = provider_client.generic("POST", URL, body, content_type=headers["content-type"])
    headers, body = to_binary(sdk_event("b1"))
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    binary = provider_client.generic("POST", URL, body, content_type="application/json", **extra)

    assert structured.json()["accepted"] == 1
    assert binary.json()["accepted"] == 1
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"s1", "b1"}


def test_rollups_sum_each_lease_metric_and_hour_and_rebuild_the_same(provider_client, lease, token_lease) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    events = [
        {**gpu_event(lease, f"g{i}", 600), "time": (hour + timedelta(minutes=5 * i)).isoformat()} for i in range(6)
    ] + [token_event(token_lease, "t1"), token_event(token_lease, "t2", input_tokens=5)]
    send(provider_client, events)
    buckets = {
        (lease.pk, hour),
        (lease.pk, timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)),
    }
    token_hours = {
        (token_lease.pk, e.time.replace(minute=0, second=0, microsecond=0))
        for e in UsageEvent.objects.filter(type="compute.tokens")
    }

    usage_rollup_buckets(buckets=buckets | token_hours)
    incremental = set(UsageRollup.objects.values_list("lease_id", "metric", "model", "hour", "quantity", "events"))
    usage_rollups_rebuild()
    rebuilt = set(UsageRollup.objects.values_list("lease_id", "metric", "model", "hour", "quantity", "events"))

    assert incremental == rebuilt
    gpu = UsageRollup.objects.get(metric="gpu_seconds")
    assert (gpu.quantity, gpu.events, gpu.hour) == (Decimal(3600), 6, hour)
    assert UsageRollup.objects.get(metric="input_tokens").quantity == Decimal(1005)


def test_a_late_event_inside_the_grace_updates_its_hours_rollup(provider_client, lease) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    send(provider_client, [{**gpu_event(lease, "a", 600), "time": (hour + timedelta(minutes=1)).isoformat()}])
    usage_rollup_buckets(buckets=[(lease.pk, hour)])

    send(provider_client, [{**gpu_event(lease, "late", 60), "time": (hour + timedelta(minutes=59)).isoformat()}])
    usage_rollup_buckets(buckets=[(lease.pk, hour)])
    usage_rollup_buckets(buckets=[(lease.pk, hour)])

    assert UsageRollup.objects.get(metric="gpu_seconds", hour=hour).quantity == Decimal(660)


def test_the_documented_provider_agents_batches_are_accepted_and_safe_to_resend(provider_client, lease) -> None:
    import importlib.util

    from cloudevents.v1.conversion import to_dict

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("provider_agent", REPO / "docs" / "provider_agent.py")
    assert spec and spec.loader
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    minute = (timezone.now() - timedelta(minutes=3)).replace(second=0, microsecond=0)
    batch = [
        to_dict(
            agent.usage_event(source="agent://node-1", lease=str(lease.pk), cards=8, minute=minute, card_seconds=480.0)
        )
    ]

    first = send(provider_client, batch).json()
    resent = send(provider_client, batch).json()

    assert (first["accepted"], resent["duplicates"]) == (1, 1)


def test_stored_events_leave_their_hours_due_for_a_rollup_until_one_counts_them(provider_client, lease) -> None:
    send(provider_client, [gpu_event(lease, "a", minutes_ago=10), gpu_event(lease, "b", minutes_ago=70)])
    due = set(UsageRollupDue.objects.values_list("lease_id", "hour"))
    assert len(due) == 2

    usage_rollup_buckets(buckets=due)

    assert not UsageRollupDue.objects.exists()
    assert UsageRollup.objects.count() == 2


def test_hours_due_longer_than_a_rollup_takes_are_found_again_for_beat(provider_client, lease, settings) -> None:
    settings.USAGE_ROLLUP_REQUEUE_SECONDS = 300
    send(provider_client, [gpu_event(lease, "a", minutes_ago=10)])

    assert usage_rollups_overdue(now=timezone.now()) == []
    assert usage_rollups_overdue(now=timezone.now() + timedelta(seconds=301)) == list(
        UsageRollupDue.objects.values_list("lease_id", "hour")
    )
