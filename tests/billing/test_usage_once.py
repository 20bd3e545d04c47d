"""One write per usage event (issue 22, point 1): the events table keeps each event's key itself,
unique forever per provider across every month, under concurrent ingestion too; the migration
that made it moves the events stored before with their keys."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import time_machine
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from billing.models import UsageEvent, UsageRollupDue
from billing.services.usage import event_key, usage_events_ingest
from marketplace.models import Lease
from tests.billing.conftest import gpu_event, running_lease
from tests.factories import ProviderFactory

REPO = Path(__file__).resolve().parents[2]
MARCH = datetime(2026, 3, 31, 11, 0, tzinfo=UTC)  # 19:00 in Shanghai: March in either calendar
APRIL = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai: April in either calendar
NOW = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)


def at(lease: Lease, event_id: str, time: datetime, quantity: int = 480, source: str = "agent://a") -> dict:
    return {**gpu_event(lease, event_id, quantity), "source": source, "time": time.isoformat()}


def across_the_month_end(buyer: Any, provider: Any) -> Lease:
    """A lease running from 10:00 UTC on 31 March to 10:00 UTC on 1 April."""
    with time_machine.travel(NOW, tick=False):
        return running_lease(buyer=buyer, provider=provider, started_hours_ago=16)


@pytest.mark.django_db
def test_a_key_used_in_one_month_is_refused_in_the_next_and_a_replay_adds_nothing(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    lease = across_the_month_end(buyer, provider)
    first = usage_events_ingest(provider_id=provider.pk, events=[at(lease, "e1", MARCH)], now=NOW)

    # the same source and id a month later, other content: refused, not stored beside the first
    later = usage_events_ingest(provider_id=provider.pk, events=[at(lease, "e1", APRIL)], now=NOW)
    # the same event again: a duplicate, no row
    replay = usage_events_ingest(provider_id=provider.pk, events=[at(lease, "e1", MARCH)], now=NOW)

    assert (first.accepted, first.errors) == (1, [])
    assert [error["code"] for error in later.errors] == ["conflict"] and later.accepted == 0
    assert (replay.accepted, replay.duplicates, replay.errors) == (0, 1, [])
    assert list(UsageEvent.objects.values_list("event_id", "time")) == [("e1", MARCH)]


@pytest.mark.django_db
def test_another_provider_may_use_the_same_key_in_any_month(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    other = ProviderFactory()
    mine, theirs = across_the_month_end(buyer, provider), across_the_month_end(buyer, other)
    usage_events_ingest(provider_id=provider.pk, events=[at(mine, "e1", MARCH)], now=NOW)

    answers = [
        usage_events_ingest(provider_id=other.pk, events=[at(theirs, "e1", time)], now=NOW) for time in (APRIL, MARCH)
    ]

    assert [(answer.accepted, answer.errors) for answer in answers] == [(1, []), (0, answers[1].errors)]
    assert [error["code"] for error in answers[1].errors] == ["conflict"]  # against its own April event
    assert sorted(UsageEvent.objects.values_list("provider_id", "time")) == sorted(
        [(provider.pk, MARCH), (other.pk, APRIL)]
    )


@pytest.mark.django_db
def test_the_insert_marks_the_buckets_of_the_new_events_due_and_a_replay_marks_none(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    lease = across_the_month_end(buyer, provider)
    events = [at(lease, f"e{n}", time) for n, time in enumerate([MARCH, MARCH + timedelta(minutes=5), APRIL])]

    usage_events_ingest(provider_id=provider.pk, events=events, now=NOW)
    marks = list(UsageRollupDue.objects.order_by("hour").values_list("lease_id", "hour", "batch"))
    usage_events_ingest(provider_id=provider.pk, events=events, now=NOW + timedelta(minutes=1))

    assert [(lease_id, hour) for lease_id, hour, _ in marks] == [(lease.pk, MARCH), (lease.pk, APRIL)]
    assert list(UsageRollupDue.objects.order_by("hour").values_list("lease_id", "hour", "batch")) == marks


@pytest.mark.django_db
def test_a_bucket_whose_new_events_are_all_taken_back_is_not_marked_due_but_one_due_before_stays(lease) -> None:  # type: ignore[no-untyped-def]
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)

    def event(event_id: str, minute: int, quantity: int) -> dict:
        return {**gpu_event(lease, event_id, quantity), "time": (hour + timedelta(minutes=minute)).isoformat()}

    usage_events_ingest(provider_id=lease.provider_id, events=[event("full", 5, 3600 * 8)])
    UsageRollupDue.objects.all().delete()  # as its rollup does

    refused = usage_events_ingest(provider_id=lease.provider_id, events=[event("over", 40, 3600)])
    assert [error["code"] for error in refused.errors] == ["hourly_limit_exceeded"]
    assert not UsageRollupDue.objects.exists()

    usage_events_ingest(provider_id=lease.provider_id, events=[event("next-hour", 65, 60)])  # due, not rolled up
    again = usage_events_ingest(provider_id=lease.provider_id, events=[event("over-2", 50, 3600), event("n2", 70, 60)])
    assert [error["id"] for error in again.errors] == ["over-2"]
    assert list(UsageRollupDue.objects.values_list("lease_id", "hour")) == [(lease.pk, hour + timedelta(hours=1))]


def test_the_key_is_sixteen_bytes_of_sha256_over_provider_source_and_id_in_sql(db: None) -> None:
    provider = "6f1c1b5e-8a53-4d3c-9d0e-6f1c1b5e8a53"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT billing_usage_event_key(%s, %s, %s), billing_usage_event_key(%s, %s, %s)",
            [provider, "agent://a", "bc", provider, "agent://ab", "c"],
        )
        key, shifted = cursor.fetchone()
    expected = hashlib.sha256(f"{provider}:9:agent://abc".encode()).hexdigest()[:32]
    assert key.hex == expected == event_key(provider, "agent://a", "bc")  # ingest computes it in Python
    assert key != shifted  # the source's length is in it: no two (source, id) pairs run together


# --- two processes at once ---------------------------------------------------------------------

CHILD = """
import json, os, sys, time
from datetime import datetime
import django
django.setup()
from django.db import connection
from billing.services.usage import event_key, usage_events_ingest
provider, now, path = sys.argv[1], datetime.fromisoformat(sys.argv[2]), sys.argv[3]
events = json.loads(open(path).read())
connection.ensure_connection()
print("ready", flush=True)
sys.stdin.readline()
result = usage_events_ingest(provider_id=provider, events=events, now=now)
print(json.dumps({"accepted": result.accepted, "duplicates": result.duplicates,
                  "codes": sorted({e["code"] for e in result.errors}), "rejected": result.rejected}))
"""


def ingest_at_once(provider: Any, batches: list[list[dict]], now: datetime) -> list[dict]:
    """Each batch posted by its own process, all released together once every one is connected."""
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
            f"/{database['NAME']}"
        ),
    }
    with tempfile.TemporaryDirectory() as folder:
        processes = []
        for n, batch in enumerate(batches):
            path = Path(folder) / f"{n}.json"
            path.write_bytes(orjson.dumps(batch))
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(provider.pk), now.isoformat(), str(path)],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        answers = []
        for process in processes:
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0, out
            answers.append(json.loads(out.strip().splitlines()[-1]))
    return answers


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_from_two_processes_at_once_is_stored_once(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    lease = across_the_month_end(buyer, provider)
    batch = [at(lease, f"e{n}", MARCH + timedelta(seconds=n), quantity=1) for n in range(1000)]

    answers = ingest_at_once(provider, [batch, batch], NOW)

    assert sorted((a["accepted"], a["duplicates"], a["rejected"]) for a in answers) == [(0, 1000, 0), (1000, 0, 0)]
    assert UsageEvent.objects.count() == 1000


@pytest.mark.django_db(transaction=True)
def test_one_providers_keys_sent_at_once_against_two_of_its_leases_are_each_stored_once(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    # Two leases: the leases' locks do not order the batches, only the events' primary key does.
    first, second = across_the_month_end(buyer, provider), across_the_month_end(buyer, provider)
    batches = [
        [at(lease, f"e{n}", APRIL + timedelta(seconds=n), quantity=1) for n in range(1000)] for lease in (first, second)
    ]

    answers = ingest_at_once(provider, batches, NOW)

    assert sum(answer["accepted"] for answer in answers) == 1000
    assert sum(answer["rejected"] for answer in answers) == 1000
    assert {code for answer in answers for code in answer["codes"]} == {"conflict"}
    assert UsageEvent.objects.count() == 1000
    assert UsageEvent.objects.values("event_id").distinct().count() == 1000


# --- the migration, on a populated table ---------------------------------------------------------

BEFORE, AFTER = ("billing", "0020_reserved_capacity"), ("billing", "0021_usage_event_one_write")


def old_digest(event: dict) -> str:
    """The digest the key table stored before 0018 (all 32 bytes of the SHA-256 of the content)."""
    content = orjson.dumps([event["type"], event["subject"], event["time"], event["data"]], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(content).hexdigest()


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_stored_events_with_their_keys_and_digests(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    lease = across_the_month_end(buyer, provider)
    other = ProviderFactory()
    events = [at(lease, "e1", MARCH), at(lease, "e2", APRIL), at(lease, "e1", APRIL, source="agent://b")]
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    try:
        with connection.cursor() as cursor:  # as the code before 0018 stored them: an event and its key
            for event in events:
                cursor.execute(
                    "INSERT INTO billing_usageevent (source, event_id, type, lease_id, provider_id, time, quantity,"
                    " cards, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [event["source"], event["id"], event["type"], lease.pk, provider.pk, event["time"],
                     event["data"]["quantity"], event["data"]["cards"], orjson.dumps(event["data"]).decode()],
                )  # fmt: skip
                cursor.execute(
                    "INSERT INTO billing_usageeventkey (provider_id, source, event_id, digest, time, batch)"
                    " VALUES (%s, %s, %s, %s, %s, gen_random_uuid())",
                    [provider.pk, event["source"], event["id"], old_digest(event), event["time"]],
                )
        executor = MigrationExecutor(connection)
        executor.migrate([AFTER])
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('billing_usageeventkey'), to_regclass('billing_usageevent_by_month')")
        assert cursor.fetchone() == (None, None)
        cursor.execute(
            "SELECT count(*) FROM billing_usageevent WHERE key = billing_usage_event_key(provider_id, source, event_id)"
        )
        assert cursor.fetchone()[0] == 3
    stored = {(e.source, e.event_id): (e.time, e.digest.hex) for e in UsageEvent.objects.all()}
    assert stored == {
        (event["source"], event["id"]): (datetime.fromisoformat(event["time"]), old_digest(event)[:32])
        for event in events
    }
    # and ingest goes on from them: a replay is a duplicate, other content a conflict, another provider's new
    replay = usage_events_ingest(provider_id=provider.pk, events=events, now=NOW)
    changed = usage_events_ingest(provider_id=provider.pk, events=[at(lease, "e1", MARCH, quantity=60)], now=NOW)
    theirs = across_the_month_end(buyer, other)
    fresh = usage_events_ingest(provider_id=other.pk, events=[at(theirs, "e1", MARCH)], now=NOW)
    assert (replay.accepted, replay.duplicates, replay.errors) == (0, 3, [])
    assert [error["code"] for error in changed.errors] == ["conflict"]
    assert (fresh.accepted, fresh.errors) == (1, [])
    assert UsageEvent.objects.count() == 4
