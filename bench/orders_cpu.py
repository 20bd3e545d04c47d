"""Orders and quotes in process: CPU time per request, queries, a profile, and the answers.

    .venv/bin/python bench/orders_cpu.py --database bench_orders [--requests 200] [--profile]
    .venv/bin/python bench/orders_cpu.py --database bench_orders --dump answers.json --frozen 2026-12-07T14:10Z

``POST /api/v1/quotes/`` and ``POST /api/v1/orders/`` through Django's test client on a copy
of ``--database`` (the national data set, as ``bench/placement.py`` seeds it), the four order
kinds of ``bench/placement.py``, set up as the server is (``config/wsgi.py``, its collector's settings included):
CPU time of the process (``time.process_time``) and wall time per request, queries per
request (``CaptureQueriesContext``), and with ``--profile`` the cProfile of the orders.
``--dump`` writes every answer (ids of orders and leases blanked) with the clock frozen, so
that two versions of the code can be shown to answer alike.
"""

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import environment, recreate_database, stats
from bench.placement import order_bodies as bodies


def variants(now: datetime) -> list[dict[str, Any]]:
    """More kinds, for the answers only: prices capped, booked ahead, reserved, refused."""
    ahead = (now + timedelta(days=2)).isoformat()
    deadline = (now + timedelta(hours=30)).isoformat()
    return [
        {"gpu_model": "H20", "cards": 4, "workload": "batch_inference", "duration_hours": "3", "max_price": "9"},
        {"gpu_model": "910B", "cards": 8, "workload": "training", "duration_hours": "5", "earliest_start": ahead},
        {"gpu_model": "H800-80G", "cards": 8, "workload": "training", "duration_hours": "24", "commitment": "reserved"},
        {"gpu_model": "A100-80G", "cards": 100000, "workload": "training", "duration_hours": "2"},
        {
            "cards": 2,
            "workload": "realtime_inference",
            "user_region": "beijing",
            "max_latency_ms": 1,
            "duration_hours": "1",
        },
        {
            "min_memory_gb": 64,
            "cards": 500,
            "workload": "training",
            "duration_hours": "6",
            "split": True,
            "deadline": deadline,
            "min_green_share": "0.3",
        },
        {
            "gpu_model": "H20",
            "cards": 2,
            "workload": "training",
            "duration_hours": "2",
            "allowed_hubs": ["guizhou", "gansu"],
        },
        {"gpu_model": "H20", "cards": 2, "workload": "training", "duration_hours": "40", "deadline": deadline},
    ]


_ID = re.compile(r'"(id|order|lease)": ?"[0-9a-f-]{36}"')


def _blank(data: bytes) -> Any:
    text = _ID.sub(r'"\1": "-"', data.decode())
    answer = json.loads(text)
    if isinstance(answer, dict):
        for key in ("created_at", "updated_at"):
            answer.pop(key, None)
        for lease in answer.get("leases", []):
            for key in ("created_at", "updated_at"):
                lease.pop(key, None)
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="bench_orders", help="The seeded database (copied, not changed).")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dump", help="Write every answer here (with --frozen to compare two versions).")
    parser.add_argument(
        "--frozen", type=datetime.fromisoformat, help="Freeze the clock at this moment (after the seeding)."
    )
    parser.add_argument("--default-gc", action="store_true", help="Python's collector thresholds, not the server's.")
    args = parser.parse_args()

    copy = f"{args.database}_cpu"
    recreate_database(copy, template=args.database)
    os.environ.update({**environment(args.database), "DATABASE_URL": environment(copy)["DATABASE_URL"]})
    keys_file = Path(os.environ["DATA_DIR"]) / "national-keys.txt"
    key = next(line.split()[2] for line in keys_file.read_text().splitlines() if line.startswith("buyer"))

    import time_machine

    traveller = time_machine.travel(args.frozen, tick=False) if args.frozen else None
    if traveller:
        traveller.start()
    import config.wsgi  # noqa: F401  # Django set up as the server sets it up, the collector's settings included

    if args.default_gc:
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")
    now = datetime.now(UTC)

    def post(path: str, body: dict[str, Any]) -> Any:
        return client.post(path, data=json.dumps(body), content_type="application/json")

    if args.dump:
        answers = []
        for body in bodies(now) + variants(now):
            for path in ("/api/v1/quotes/", "/api/v1/orders/", "/api/v1/quotes/"):
                response = post(path, body)
                answers.append(
                    {"path": path, "body": body, "status": response.status_code, "answer": _blank(response.content)}
                )
        Path(args.dump).write_text(json.dumps(answers, indent=1, sort_keys=True))
        print(f"{len(answers)} answers written to {args.dump}")
        return 0

    kinds = bodies(now)
    for n in range(args.warm):
        post("/api/v1/quotes/", kinds[n % 4])
        post("/api/v1/orders/", kinds[n % 4])
    print(f"load average {os.getloadavg()}", flush=True)
    collections: list[list[float]] = [[], [], []]  # each generation's collections, their ms
    started: list[float] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        else:
            collections[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(collected)
    for path in ("/api/v1/quotes/", "/api/v1/orders/"):
        for generation in collections:
            generation.clear()
        cpu, wall, queries = [], [], []
        for n in range(args.requests):
            with CaptureQueriesContext(connection) as captured:
                c0, w0 = time.process_time(), time.perf_counter()
                response = post(path, kinds[n % 4])
                cpu.append((time.process_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
            queries.append(len(captured))
            if response.status_code not in (200, 201):
                print(f"  {path}: HTTP {response.status_code} {response.content[:200]!r}")
        c, w = stats(cpu), stats(wall)
        print(
            f"{path:<20} CPU median {c['median']:.2f} p95 {c['p95']:.2f} p99 {c['p99']:.2f} ms; "
            f"wall median {w['median']:.2f} p95 {w['p95']:.2f} p99 {w['p99']:.2f} ms; "
            f"queries {min(queries)}..{max(queries)}"
        )
        print(
            "  collector: "
            + ", ".join(
                f"generation {n}: {len(times)} collections, longest {max(times, default=0):.1f} ms"
                for n, times in enumerate(collections)
            )
        )
    gc.callbacks.remove(collected)
    if args.profile:
        for path in ("/api/v1/quotes/", "/api/v1/orders/"):
            profiler = cProfile.Profile()
            profiler.enable()
            for n in range(args.requests):
                post(path, kinds[n % 4])
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
            print(f"==> profile of {args.requests} x {path}\n{out.getvalue()}")
        with CaptureQueriesContext(connection) as captured:
            post("/api/v1/orders/", kinds[1])
        for query in captured.captured_queries:
            print(f"  {query['time']}  {query['sql'][:300]}")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
