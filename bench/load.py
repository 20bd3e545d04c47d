"""Load test: concurrent clients mixing offers, quotes, orders, usage batches and invoice reads
against gunicorn on PostgreSQL, with a Celery worker rolling the usage up.

    .venv/bin/python bench/load.py [--users 50] [--seconds 60] [--gunicorn-workers 4]

On a fresh database with the national data set, each locust user (``bench/locustfile.py``) is a
buyer with a key of its own; it places orders, has the provider of each new lease start it and
send CloudEvents batches of its usage, and reads offers, quotes and its invoices, with no think
time. After the run the worker drains the rollups; then the script checks zero 5xx and zero lost
usage events (every event a batch's answer counted as accepted is stored, and counted once in the
rollups), and prints throughput and p50/p99 per endpoint.

Rate limits must not be what is measured: the benchmark settings (the test settings) lift them.
``LOAD_SERVER_ENV="NAME=VALUE NAME=VALUE"`` is added to the environment of gunicorn and the worker,
e.g. ``API_RATE_LIMIT=100000/min`` for settings that keep them. ``LOAD_REDIS_URL`` chooses the Redis
database (default: the benchmarks' database 9).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    REPO,
    data_dir,
    environment,
    free_port,
    national_database,
    print_machine,
    request,
    start_server,
    start_worker,
    stats,
    stop_server,
    stop_worker,
    verdict,
)

DATABASE = "compute_grid_load"


def prepare(users: int, folder: Path) -> Path:
    """A key for each of ``users`` buyers and for every provider, and each pool's provider."""
    import django

    django.setup()
    from organizations.models import Organization
    from organizations.services import api_key_create
    from pools.models import ResourcePool

    buyers = Organization.objects.filter(kind="buyer").order_by("slug")[:users]
    providers = Organization.objects.filter(kind="provider").order_by("slug")
    setup = {
        "buyer_keys": [api_key_create(organization=buyer, name="load")[1] for buyer in buyers],
        "provider_keys": {str(p.pk): api_key_create(organization=p, name="load agent")[1] for p in providers},
        "pool_providers": {
            str(pool): str(provider) for pool, provider in ResourcePool.objects.values_list("pk", "provider_id")
        },
    }
    path = folder / "load-setup.json"
    path.write_text(json.dumps(setup))
    return path


def drain(broker: str, timeout: float = 600) -> int:
    """Wait until every bucket of usage is rolled up; what stays due with an empty queue is queued
    again, as Celery beat does. Returns how many buckets had to be queued again."""
    from django.utils import timezone

    from billing.models import UsageRollupDue
    from billing.services.usage import queue_rollups

    queue = redis.Redis.from_url(broker)
    requeued = 0
    deadline = time.monotonic() + timeout
    idle_since = None
    while UsageRollupDue.objects.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{UsageRollupDue.objects.count()} buckets still due for a rollup after {timeout} s")
        if queue.llen("ingest"):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 10:
            due = list(UsageRollupDue.objects.filter(marked_at__lte=timezone.now()).values_list("lease_id", "hour"))
            queue_rollups(due)
            requeued += len(due)
            idle_since = None
        time.sleep(0.5)
    return requeued


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--worker-concurrency", type=int, default=1)
    args = parser.parse_args()

    env = environment(DATABASE)
    env["REDIS_URL"] = os.environ.get("LOAD_REDIS_URL", env["REDIS_URL"])
    extra = dict(item.split("=", 1) for item in os.environ.get("LOAD_SERVER_ENV", "").split())
    env.update(extra)
    national_database(env, database=DATABASE)
    os.environ.update(env)
    folder = data_dir(DATABASE)
    setup = prepare(args.users, folder)
    print_machine(env["DATABASE_URL"])
    if extra:
        print(f"==> server environment added: {' '.join(sorted(extra))}")

    start_worker(env, concurrency=args.worker_concurrency)
    port = free_port()
    start_server(env, port, workers=args.gunicorn_workers)
    # How busy the machine is: the bare view, one request at a time, before the load.
    bare = stats([request(port, "GET", "/bare/")[2] for _ in range(200)])
    print(f"==> load average {os.getloadavg()[0]:.1f}; bare view p50 {bare['median']:.2f} ms, p99 {bare['p99']:.2f} ms")
    results_path = folder / "load-results.json"
    print(
        f"==> locust: {args.users} users, {args.seconds} s, gunicorn {args.gunicorn_workers} sync workers", flush=True
    )
    subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py"), "--headless",
            "--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", f"{args.seconds}s",
            "--stop-timeout", "30", "--host", f"http://127.0.0.1:{port}", "--only-summary", "--loglevel", "WARNING",
        ],
        cwd=REPO, env={**env, "LOAD_SETUP": str(setup), "LOAD_RESULTS": str(results_path)}, check=False,
    )  # fmt: skip
    stop_server()
    results = json.loads(results_path.read_text())

    print("==> draining the rollups", flush=True)
    started = time.monotonic()
    requeued = drain(env["REDIS_URL"])
    print(f"  drained in {time.monotonic() - started:.1f} s ({requeued} buckets queued again)")
    stop_worker()

    from django.db.models import Count, Sum

    from billing.models import UsageEvent, UsageRollup

    stored = UsageEvent.objects.aggregate(events=Count("key"), seconds=Sum("quantity"))
    rolled = UsageRollup.objects.aggregate(events=Sum("events"), seconds=Sum("quantity"))
    usage = results["usage"]

    total = results["total"]
    print(f"==> {total['requests']} requests in {results['seconds']:.0f} s: {total['rps']:.0f} req/s")
    print(f"  {'endpoint':<28} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  statuses")
    for name in sorted(results["endpoints"]):
        row = results["endpoints"][name]
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(results["statuses"].get(name, {}).items()))
        print(
            f"  {name:<28} {row['requests']:>8} {row['rps']:>7.1f} {row['p50']:>7.0f} {row['p99']:>7.0f}"
            f" {row['max']:>7.0f}  {codes}"
        )
    print(
        f"  usage events: {usage.get('accepted', 0)} accepted, {usage.get('duplicates', 0)} duplicates,"
        f" {usage.get('rejected', 0)} rejected; stored {stored['events']}, in rollups {rolled['events']}"
    )
    server_errors = sum(n for codes in results["statuses"].values() for code, n in codes.items() if int(code) >= 500)
    return verdict(
        [
            (f"zero 5xx ({server_errors})", server_errors == 0),
            (f"every request answered ({results['total']['failures']} failures)", results["total"]["failures"] == 0),
            (
                f"zero lost usage events: accepted {usage.get('accepted', 0)} = stored {stored['events']}"
                f" = in rollups {rolled['events']}",
                usage.get("accepted", 0) == stored["events"] == (rolled["events"] or 0) > 0,
            ),
            ("the rolled-up card-seconds equal the stored ones", stored["seconds"] == rolled["seconds"]),
            (f"no usage event rejected ({usage.get('rejected', 0)})", usage.get("rejected", 0) == 0),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
