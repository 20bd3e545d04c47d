"""Benchmark ``GET /api/v1/price-index/`` over the national data set, beside a bare Django view.

    .venv/bin/python bench/price_index.py [--requests 500] [--warmup 50] [--seed 42] [--scale 1.0]

(Re)creates the PostgreSQL database ``compute_grid_bench``, migrates it, runs
``seed_national`` (which writes 90 days of hourly price-index snapshots), then
serves the project with gunicorn (one sync worker, real HTTP on 127.0.0.1,
settings ``config.settings.test`` with ``bench/urls.py`` as root URLconf) and
times, one request at a time from this process:

- ``GET /bare/``: a bare Django view through the same middleware, the floor;
- ``GET /api/v1/price-index/``: a 30-day hourly series of one GPU model nationally
  (720 points merged from the snapshots of all 8 hubs), rotating through the
  GPU models and through 30-day windows of the 90 days of history, as a buyer.

Prints median, p95 and p99 of each, the ratio index/bare, and PASS/FAIL against
the target (p99 < 50 ms). Every response must be 200 with 720 points. Exits 1 on
any failure. Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379.
"""

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.harness import (
    environment,
    free_port,
    national_database,
    print_machine,
    request,
    start_server,
    stats,
    stop_server,
    verdict,
)

TARGET_P99_MS = 50.0
POINTS = 30 * 24


def index_paths(database_url: str) -> list[str]:
    """30-day hourly national series: each GPU model of the snapshots, in three windows of the history."""
    with psycopg.connect(database_url) as connection:
        models = [
            row[0] for row in connection.execute("SELECT DISTINCT gpu_model_id FROM marketplace_priceindexsnapshot")
        ]
        (latest,) = connection.execute("SELECT max(hour) FROM marketplace_priceindexsnapshot").fetchone()  # type: ignore[misc]
        (count,) = connection.execute("SELECT count(*) FROM marketplace_priceindexsnapshot").fetchone()  # type: ignore[misc]
    print(f"  {count:,} snapshot rows, {len(models)} GPU models, latest hour {latest:%Y-%m-%d %H:00} UTC")
    paths = []
    for window in range(3):
        end = latest + timedelta(hours=1) - timedelta(days=30 * window)
        start = end - timedelta(days=30)
        for model in sorted(models):
            query = {"gpu_model": model, "region": "national", "granularity": "hour"}
            query |= {"from": _z(start), "to": _z(end)}
            paths.append(f"/api/v1/price-index/?{urlencode(query)}")
    return paths


def _z(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def run(port: int, paths: list[str], count: int, key: str | None, label: str, errors: list[str]) -> list[float]:
    """``count`` requests cycling through ``paths``; checks every answer."""
    timings: list[float] = []
    for n in range(count):
        path = paths[n % len(paths)]
        status, body, ms = request(port, "GET", path, key=key)
        timings.append(ms)
        if status != 200:
            errors.append(f"{path}: HTTP {status} {body[:200]!r}")
        elif path.startswith("/api/v1/price-index/"):
            points = [point for series in json.loads(body)["series"] for point in series["points"]]
            if len(points) != POINTS:
                errors.append(f"{path}: {len(points)} points, not {POINTS}")
        if (n + 1) % 100 == 0 or n + 1 == count:
            print(f"  {label}: {n + 1}/{count}", flush=True)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="Timed requests per endpoint (500).")
    parser.add_argument("--warmup", type=int, default=50, help="Untimed requests per endpoint first (50).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--database", default="compute_grid_bench")
    args = parser.parse_args()

    env = environment(args.database)
    keys = national_database(env, database=args.database, seed=args.seed, scale=args.scale)
    print_machine(env["DATABASE_URL"])
    paths = index_paths(env["DATABASE_URL"])
    port = free_port()
    print(f"==> gunicorn on 127.0.0.1:{port}, 1 sync worker", flush=True)
    start_server(env, port)
    errors: list[str] = []
    try:
        print(f"==> warm-up: {args.warmup} requests each", flush=True)
        run(port, ["/bare/"], args.warmup, None, "bare", errors)
        run(port, paths, args.warmup, keys["buyer"], "price index", errors)
        print(f"==> timed: {args.requests} requests each", flush=True)
        bare = run(port, ["/bare/"], args.requests, None, "bare", errors)
        index = run(port, paths, args.requests, keys["buyer"], "price index", errors)
    finally:
        stop_server()
    rows = [("GET /bare/", bare), ("GET /api/v1/price-index/ (30 days hourly, national)", index)]
    print(f"\n{'endpoint':<64} {'n':>5} {'median':>8} {'p95':>8} {'p99':>8}  (ms)")
    for label, values in rows:
        s = stats(values)
        print(f"{label:<64} {len(values):>5} {s['median']:>8.2f} {s['p95']:>8.2f} {s['p99']:>8.2f}")
    b, i = stats(bare), stats(index)
    print(f"\nratio index/bare: median {i['median'] / b['median']:.1f}x, p99 {i['p99'] / b['p99']:.1f}x")
    checks = [
        (f"price index p99 {i['p99']:.1f} ms < {TARGET_P99_MS:.0f} ms", i["p99"] < TARGET_P99_MS),
        (f"every response 200 with {POINTS} points ({len(errors)} failures)", not errors),
    ]
    return verdict(checks, errors)


if __name__ == "__main__":
    sys.exit(main())
