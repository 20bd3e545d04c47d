"""Benchmark token quotes over the national data set's model endpoints, in process, beside a bare view.

    .venv/bin/python bench/tokens.py [--requests 1000] [--warmup 100] [--seed 42] [--scale 1.0]

(Re)creates the PostgreSQL database ``compute_grid_bench_tokens``, migrates it and
runs ``seed_national`` (its pools' model endpoints included), then, in this
process, one at a time, cycling through real-time and batch requests for each
seeded model:

- the token quote service (``token_quote``: the endpoints' snapshot read from
  PostgreSQL, the token dispatcher), beside ``SELECT 1`` on the same connection,
  the floor of anything that reads the database;
- ``POST /api/v1/token-quotes/`` through Django's test client (the whole
  middleware, key authentication, rate limits, the serializer; no network),
  beside ``GET /bare/``, a bare Django view through the same middleware.

Prints median, p95 and p99 of each and the ratios, and PASS/FAIL against the
target: token quotes p99 under 25 ms in process (the service). Every quote must
be 200 with a placement.
Exits 1 on any failure. Needs PostgreSQL on 127.0.0.1:5432 and Redis.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import environment, national_database, print_machine, stats, verdict

TARGET_P99_MS = 25.0
MODELS = ("deepseek-v3", "deepseek-r1", "qwen3-72b", "glm-4.5")
REGIONS = ("beijing", "shanghai", "guangzhou", "chengdu", "xian")


def bodies() -> list[dict]:
    deadline = (datetime.now(UTC) + timedelta(hours=18)).isoformat()
    rows: list[dict] = []
    for n, model in enumerate(MODELS):
        region = REGIONS[n % len(REGIONS)]
        rows.append(
            {"model": model, "input_tokens": 2000, "output_tokens": 500, "workload": "realtime", "user_region": region}
        )
        rows.append(
            {
                "model": model,
                "input_tokens": 4 * 10**9,
                "output_tokens": 10**9,
                "workload": "batch",
                "deadline": deadline,
            }
        )
    return rows


def timed(client, method: str, path: str, payloads: list[dict] | None, count: int, errors: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    timings = []
    for n in range(count):
        started = time.perf_counter()
        if payloads is None:
            response = client.get(path)
        else:
            response = client.post(path, data=json.dumps(payloads[n % len(payloads)]), content_type="application/json")
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            errors.append(f"{path}: HTTP {response.status_code} {response.content[:200]!r}")
        elif payloads is not None and not response.json()["placements"]:
            errors.append(f"{path} {payloads[n % len(payloads)]['model']}: no placement")
    return timings


def timed_calls(call: Callable[[int], Any], count: int) -> list[float]:
    timings = []
    for n in range(count):
        started = time.perf_counter()
        call(n)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def _token_request(body: dict) -> Any:
    from marketplace.token_serializers import TokenRequestSerializer

    serializer = TokenRequestSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    return serializer.token_request()


def _placed(result: Any, errors: list[str]) -> None:
    if not result.placements:
        errors.append(f"token_quote: no placement ({result.rejections})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="Timed requests per endpoint (1000).")
    parser.add_argument("--warmup", type=int, default=100, help="Untimed requests per endpoint first (100).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--database", default="compute_grid_bench_tokens")
    args = parser.parse_args()

    env = environment(args.database)
    keys = national_database(env, database=args.database, seed=args.seed, scale=args.scale)
    print_machine(env["DATABASE_URL"])
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from marketplace.token_selectors import endpoint_snapshots
    from marketplace.token_services import token_quote

    endpoints = endpoint_snapshots(now=datetime.now(UTC))
    print(f"==> {len(endpoints)} active model endpoints; in process, one request at a time", flush=True)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {keys['buyer']}", SERVER_NAME="localhost")
    payloads = bodies()
    errors: list[str] = []
    requests = [_token_request(body) for body in payloads]
    for count in (args.warmup, args.requests):
        select = timed_calls(lambda n: connection.cursor().execute("SELECT 1"), count)
        service = timed_calls(lambda n: _placed(token_quote(request=requests[n % len(requests)]), errors), count)
        bare = timed(client, "GET", "/bare/", None, count, errors)
        quotes = timed(client, "POST", "/api/v1/token-quotes/", payloads, count, errors)
    print(f"\n{'':<48} {'n':>5} {'median':>8} {'p95':>8} {'p99':>8}  (ms)")
    rows = [("SELECT 1", select), ("token_quote() (mix)", service)]
    rows += [("GET /bare/", bare), ("POST /api/v1/token-quotes/ (mix)", quotes)]
    rows += [
        (f"  {'real-time' if k % 2 == 0 else 'batch'} {payloads[k]['model']}", quotes[k :: len(payloads)])
        for k in range(len(payloads))
    ]
    for label, values in rows:
        s = stats(values)
        print(f"{label:<48} {len(values):>5} {s['median']:>8.2f} {s['p95']:>8.2f} {s['p99']:>8.2f}")
    f, t = stats(select), stats(service)
    b, q = stats(bare), stats(quotes)
    print(f"\nratio token_quote()/SELECT 1: median {t['median'] / f['median']:.1f}x, p99 {t['p99'] / f['p99']:.1f}x")
    print(f"ratio token quotes/bare view: median {q['median'] / b['median']:.1f}x, p99 {q['p99'] / b['p99']:.1f}x")
    checks = [
        (f"token quotes p99 {t['p99']:.1f} ms < {TARGET_P99_MS:.0f} ms in process", t["p99"] < TARGET_P99_MS),
        (f"every quote 200 with a placement ({len(errors)} failures)", not errors),
    ]
    return verdict(checks, errors)


if __name__ == "__main__":
    sys.exit(main())
