"""Benchmark usage ingestion through the real HTTP stack, beside a raw COPY of the same rows.

    .venv/bin/python bench/ingest.py [--events 200000] [--batch 5000] [--rounds 3] [--workers 3] [--clients 3]

On a fresh PostgreSQL database with the national data set, one provider gets
running leases; ``--events`` card-second events over them are posted in batches
of ``--batch`` to ``POST /api/v1/usage-events/`` on gunicorn (``--workers`` sync
workers) by ``--clients`` concurrent clients. Right after, the same rows (under
other ids) are written with a bare psycopg COPY into the same table (its primary
key, the event's unique key, and its lease index kept up): the physical limit.
That pair is repeated ``--rounds`` times, each round on leases of its own, so
that both sides see the table at the same size and a burst of other work on the
machine falls on one round, not on one side: the ratio is each round's, and the
verdict takes their median. Then the first round is sent again (it must add zero
rows), and the rows are written with the service's own SQL without HTTP or
Python. Prints events/s for each and HTTP ingest's ratio to the COPY, and
PASS/FAIL against the targets (>= 25,000 events/s, >= 0.4 of COPY).

``REDIS_URL`` in the environment names the broker's database (the rollup tasks
queued land there; the default is 9).
"""

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    environment,
    free_port,
    national_database,
    print_machine,
    request,
    start_server,
    stop_server,
    verdict,
)

TARGET_RATE, TARGET_RATIO = 25_000, 0.4
CARDS_PER_LEASE = 8
EVENT_SECONDS = 60


def make_leases(count: int) -> tuple[Any, str, list[Any], datetime]:
    """``count`` running leases of 8 cards on one provider's pools; returns (provider id, key, lease ids, start)."""
    import django

    django.setup()
    from django.db.models import Sum

    from marketplace.models import Lease, Order
    from organizations.models import Organization
    from organizations.services import api_key_create
    from pools.models import PricePlan, ResourcePool
    from pools.services import pool_reserve_cards

    buyer = Organization.objects.filter(kind="buyer").order_by("slug").first()
    provider = (
        Organization.objects.filter(kind="provider").annotate(free=Sum("pools__free_cards")).order_by("-free").first()
    )
    assert buyer and provider, "seed_national first"
    pools = list(ResourcePool.objects.filter(provider=provider, status="active").order_by("-free_cards"))
    started = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)
    lease_ids = []
    for n in range(count):
        pool = next(p for p in pools if p.free_cards >= CARDS_PER_LEASE * (1 + n // len(pools)))
        pool_reserve_cards(pool=pool, cards=CARDS_PER_LEASE)
        order = Order.objects.create(
            buyer=buyer, gpu_model_id=pool.gpu_model_id, cards=CARDS_PER_LEASE, workload="training",
            duration_hours=24, estimated_cost=0,
        )  # fmt: skip
        lease = Lease.objects.create(
            order=order, buyer=buyer, provider=provider, pool=pool, cards=CARDS_PER_LEASE, workload="training",
            status="running", start_at=started, end_at=started + timedelta(hours=24), started_at=started,
            price_plan=PricePlan.objects.filter(pool=pool).order_by("-version").first(),
            price_locked_until=started + timedelta(hours=24),
            estimated_cost=0,
        )  # fmt: skip
        lease_ids.append(lease.pk)
    _, key = api_key_create(organization=provider, name="bench agent")
    return provider.pk, key, lease_ids, started


def make_batches(lease_ids: list[Any], started: datetime, events: int, batch: int, tag: str) -> list[bytes]:
    """Each batch holds consecutive minutes of every lease; 60 events a lease-hour fill its cap exactly."""
    per_lease = events // len(lease_ids)
    rows = []
    for minute in range(per_lease):
        time = (started + timedelta(minutes=minute, seconds=30)).isoformat()
        for lease_id in lease_ids:
            rows.append(
                {
                    "specversion": "1.0",
                    "id": f"{lease_id}-{minute}{tag}",
                    "source": "agent://bench",
                    "type": "compute.gpu_seconds",
                    "subject": str(lease_id),
                    "time": time,
                    "data": {"quantity": CARDS_PER_LEASE * EVENT_SECONDS, "cards": CARDS_PER_LEASE},
                }
            )
    return [orjson.dumps(rows[start : start + batch]) for start in range(0, len(rows), batch)]


def post_all(port: int, key: str, batches: list[bytes], clients: int, label: str) -> tuple[dict[str, int], float]:
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": 0}
    lock = threading.Lock()
    queue = list(enumerate(batches))
    done = [0]

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                _, body = queue.pop(0)
            status, answer, _ = request(
                port,
                "POST",
                "/api/v1/usage-events/",
                key=key,
                body=body,
                content_type="application/cloudevents-batch+json",
            )
            with lock:
                if status != 200:
                    totals["errors"] += 1
                    print(f"  HTTP {status}: {answer[:300]!r}")
                else:
                    result = orjson.loads(answer)
                    for name in ("accepted", "duplicates", "rejected"):
                        totals[name] += result[name]
                done[0] += 1
                if done[0] % 10 == 0 or done[0] == len(batches):
                    print(f"  {label}: {done[0]}/{len(batches)} batches", flush=True)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return totals, time.perf_counter() - started


def raw_copy(database_url: str, provider_id: Any, batches: list[bytes]) -> float:
    """The same rows with a bare COPY into the events table (its primary key and lease index
    kept up, as for every write), kept, as the ingested ones are. Rows per second. The keys are
    computed before the clock starts: this is the table's own cost."""
    from billing.services.usage import event_key

    rows = [event for body in batches for event in orjson.loads(body)]
    keys = [event_key(provider_id, event["source"], event["id"] + "-copy") for event in rows]
    now = datetime.now(UTC)
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        started = time.perf_counter()
        with cursor.copy(
            "COPY billing_usageevent (key, digest, source, event_id, type, lease_id, provider_id, time, quantity,"
            " cards, data, received_at) FROM STDIN"
        ) as copy:
            for key, event in zip(keys, rows, strict=True):
                copy.write_row(
                    (
                        key, key, event["source"], event["id"] + "-copy", event["type"], uuid.UUID(event["subject"]),
                        provider_id, event["time"], event["data"]["quantity"], event["data"]["cards"],
                        orjson.dumps(event["data"]).decode(), now,
                    )
                )  # fmt: skip
        connection.commit()
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def staged_copy(database_url: str, provider_id: Any, batches: list[bytes]) -> float:
    """The service's own SQL without HTTP or Python: COPY into its staging table, then its one
    statement (insert ON CONFLICT DO NOTHING, mark the buckets due); then deleted. Rows per second.
    The keys are computed before the clock starts, as for the raw COPY."""
    from billing.services.usage import _INSERT, _STAGE_COLUMNS, event_key

    rows = [event for body in batches for event in orjson.loads(body)]
    keys = [event_key(provider_id, event["source"], event["id"] + "-staged") for event in rows]
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE usage_stage (key uuid, source text, event_id text, digest uuid, type text,"
            " lease_id uuid, time timestamptz, quantity numeric, cards integer, model text, input_tokens bigint,"
            " output_tokens bigint, data jsonb)"
        )
        started = time.perf_counter()
        with cursor.copy(f"COPY usage_stage ({_STAGE_COLUMNS}) FROM STDIN") as copy:
            for key, event in zip(keys, rows, strict=True):
                copy.write_row(
                    (
                        key, event["source"], event["id"] + "-staged", uuid.uuid4(), event["type"],
                        uuid.UUID(event["subject"]), event["time"], event["data"]["quantity"],
                        event["data"]["cards"], "", None, None, orjson.dumps(event["data"]).decode(),
                    )
                )  # fmt: skip
        cursor.execute(_INSERT, {"provider": provider_id, "now": datetime.now(UTC), "batch": uuid.uuid4()})
        connection.commit()
        elapsed = time.perf_counter() - started
        cursor.execute("DELETE FROM billing_usageevent WHERE event_id LIKE %s", ["%-staged"])
        connection.commit()
    return len(rows) / elapsed


def count_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT count(*) FROM billing_usageevent").fetchone()[0]  # type: ignore[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="Events per round (200,000).")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--leases", type=int, default=200, help="Leases per round (200).")
    parser.add_argument("--rounds", type=int, default=3, help="HTTP ingest and raw COPY pairs (3).")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (3).")
    parser.add_argument("--clients", type=int, default=3, help="Concurrent clients (3).")
    parser.add_argument("--database", default="compute_grid_bench_ingest")
    args = parser.parse_args()

    env = environment(args.database)
    env["REDIS_URL"] = os.environ.get("REDIS_URL", env["REDIS_URL"])
    national_database(env, database=args.database)
    os.environ.update(env)
    rounds = []
    for _ in range(args.rounds):
        provider_id, key, lease_ids, started = make_leases(args.leases)
        rounds.append(make_batches(lease_ids, started, args.events, args.batch, tag=""))
    events = sum(len(orjson.loads(body)) for body in rounds[0])
    print(
        f"==> {args.rounds} rounds of {events:,} events in {len(rounds[0])} batches of {args.batch:,} over"
        f" {args.leases} leases each"
    )
    print_machine(env["DATABASE_URL"])

    port = free_port()
    print(f"==> gunicorn on 127.0.0.1:{port}, {args.workers} sync workers, {args.clients} clients", flush=True)
    start_server(env, port, workers=args.workers)
    measured = []  # (HTTP events/s, accepted, raw COPY rows/s) per round
    accepted_total = errors = 0
    try:
        warmup = make_batches(lease_ids[:10], started + timedelta(hours=19), 500, 500, tag="-warmup")
        post_all(port, key, warmup, 1, "warm-up")
        rows_before = count_rows(env["DATABASE_URL"])
        for number, batches in enumerate(rounds, 1):
            first, elapsed = post_all(port, key, batches, args.clients, f"round {number} ingest")
            copy_rate = raw_copy(env["DATABASE_URL"], provider_id, batches)
            print(f"  round {number} raw COPY: {copy_rate:,.0f} rows/s", flush=True)
            measured.append((first["accepted"] / elapsed, first["accepted"], copy_rate))
            accepted_total += first["accepted"]
            errors += first["errors"]
        rows_after = count_rows(env["DATABASE_URL"])
        replay, replay_elapsed = post_all(port, key, rounds[0], args.clients, "replay of round 1")
        rows_after_replay = count_rows(env["DATABASE_URL"])
        errors += replay["errors"]
    finally:
        stop_server()
    print("==> staged COPY + the service's one INSERT ... ON CONFLICT statement (no HTTP, no Python)", flush=True)
    staged_rate = staged_copy(env["DATABASE_URL"], provider_id, rounds[0])

    print(f"\n{'':34}{'events':>10}{'events/s':>12}{'raw COPY/s':>12}{'ratio':>8}")
    ratios = []
    for number, (rate, accepted, copy_rate) in enumerate(measured, 1):
        ratios.append(rate / copy_rate)
        label = f"round {number}: HTTP ingest (gunicorn)"
        print(f"{label:34}{accepted:>10,}{rate:>12,.0f}{copy_rate:>12,.0f}{ratios[-1]:>8.2f}")
    replay_rate = replay["duplicates"] / replay_elapsed
    print(f"{'HTTP replay of round 1':34}{replay['duplicates']:>10,}{replay_rate:>12,.0f}")
    print(f"{'staged COPY + ON CONFLICT (SQL)':34}{events:>10,}{staged_rate:>12,.0f}")
    ratio, rate = statistics.median(ratios), statistics.median(rate for rate, _, _ in measured)
    print(f"\nratio HTTP ingest / raw COPY (events table), median of {len(ratios)} rounds: {ratio:.2f}"
          f" (from {min(ratios):.2f} to {max(ratios):.2f})")  # fmt: skip
    print(f"ratio HTTP ingest / staged COPY + ON CONFLICT: {rate / staged_rate:.2f}")
    stored = events * args.rounds
    checks = [
        (f"every event accepted once ({accepted_total:,}/{stored:,}; {rows_after - rows_before:,} rows, COPY's too)",
         accepted_total == stored and rows_after - rows_before == 2 * stored),
        (f"{rate:,.0f} events/s (median) >= {TARGET_RATE:,}", rate >= TARGET_RATE),
        (f"ratio to raw COPY, events table {ratio:.2f} (median) >= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        (f"replay adds zero rows ({rows_after_replay - rows_after})", rows_after_replay == rows_after),
        (f"replay answers every event a duplicate ({replay['duplicates']:,})", replay["duplicates"] == events),
        ("no HTTP errors", errors == 0),
    ]  # fmt: skip
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
