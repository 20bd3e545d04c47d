"""Benchmark the dashboards over the national data set, beside a bare Django view.

    .venv/bin/python bench/dashboards.py [--requests 100] [--warmup 10] [--seed 42] [--scale 1.0]

(Re)creates the PostgreSQL database ``compute_grid_bench_dashboards``, migrates it,
runs ``seed_national``, then adds a working month on top of it (``build_activity``,
through the services where they are quick enough): orders placed by the
dispatcher for national buyers, a week of hourly card-seconds for each lease,
last month's invoices finalized with vouchers paying their share (statements,
platform revenue, redemptions, invoices overdue), a voucher program with a
voucher for 1,000 buyers, and a day of one-minute heartbeats for one provider's
pools. It signs a member of the operator, the issuer, the buyer and the
provider with the most leases in through the login form and times, one request
at a time over real HTTP to gunicorn (one sync worker):

- ``GET /bare/``: a bare Django view through the same middleware, the floor;
- each dashboard page, and the invoice's print view and PDF.

Prints median, p95 and p99 of each and the ratio to the bare view, and PASS/FAIL
against the target: every page's median under 300 ms (p95 printed beside it).
Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379.
"""

import argparse
import http.client
import re
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    data_dir,
    environment,
    free_port,
    manage,
    national_database,
    print_machine,
    request,
    start_server,
    stats,
    stop_server,
    verdict,
)

TARGET_MS = 300.0
PASSWORD = "bench-dashboards"  # noqa: S105  # a throwaway database's throwaway users
ORDERS = 400
USAGE_DAYS = 7
LAST_MONTH_LEASES = 150
VOUCHER_BUYERS = 1000


def build_activity() -> None:  # pragma: no cover - runs inside ``manage.py shell``
    """A working month on the national data set (``billing.activity.national_month``); writes the
    page paths to ``pages.txt``."""
    from django.conf import settings
    from django.utils import timezone

    from billing.activity import national_month
    from organizations.services import member_set

    started = time.monotonic()
    month = national_month(
        now=timezone.now(),
        orders=ORDERS,
        usage_days=USAGE_DAYS,
        last_month_leases=LAST_MONTH_LEASES,
        voucher_buyers=VOUCHER_BUYERS,
        say=lambda line: print(line, flush=True),
    )
    lines = []
    for kind in ("operator", "issuer", "buyer", "provider"):
        organization = month[kind]
        member_set(organization=organization, username=f"bench-{kind}", password=PASSWORD)
        lines.append(f"{kind} bench-{kind} /dashboard/{organization.slug}/")
    issuer, buyer, invoice = month["issuer"].slug, month["buyer"].slug, month["invoice"].pk
    lines.append(f"issuer bench-issuer /dashboard/{issuer}/programs/{month['program'].pk}/")
    lines.append(f"buyer bench-buyer /dashboard/{buyer}/invoices/{invoice}/")
    lines.append(f"buyer bench-buyer /dashboard/{buyer}/invoices/{invoice}/pdf/")
    (Path(settings.DATA_DIR) / "pages.txt").write_text("\n".join(lines) + "\n")
    print(
        f"  provider {month['provider'].slug}: {month['pools']} pools; buyer {buyer}; "
        f"{month['vouchers']} vouchers ({time.monotonic() - started:.0f} s)",
        flush=True,
    )


def sign_in(port: int, username: str) -> str:
    """The ``Cookie`` header of a session signed in through the login form."""

    def call(method: str, path: str, body: str = "", cookie: str = "") -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Cookie": cookie}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    form = call("GET", "/dashboard/login/")
    csrf = re.search(r"csrftoken=([^;]+)", form.getheader("Set-Cookie") or "")
    assert csrf, "no CSRF cookie"
    body = urllib.parse.urlencode(
        {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf[1], "next": "/dashboard/"}
    )
    answer = call("POST", "/dashboard/login/", body, cookie=f"csrftoken={csrf[1]}")
    session = re.search(r"sessionid=([^;]+)", answer.getheader("Set-Cookie") or "")
    if answer.status != 302 or not session:
        sys.exit(f"{username} could not sign in: HTTP {answer.status}")
    return f"csrftoken={csrf[1]}; sessionid={session[1]}"


def run(port: int, path: str, count: int, cookie: str, errors: list[str]) -> list[float]:
    timings = []
    for _ in range(count):
        status, body, ms = request(port, "GET", path, cookie=cookie)
        timings.append(ms)
        if status != 200:
            errors.append(f"{path}: HTTP {status} {body[:200]!r}")
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="Timed requests per page (100).")
    parser.add_argument("--warmup", type=int, default=10, help="Untimed requests per page first (10).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--database", default="compute_grid_bench_dashboards")
    args = parser.parse_args()

    env = environment(args.database)
    national_database(env, database=args.database, seed=args.seed, scale=args.scale)
    print("==> a working month on top: orders, usage, invoices, vouchers, heartbeats", flush=True)
    started = time.monotonic()
    print(manage(env, "shell", "-c", "from bench.dashboards import build_activity; build_activity()"), end="")
    manage(env, "shell", "-c", "from django.db import connection; connection.cursor().execute('VACUUM ANALYZE')")
    print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    pages = [line.split() for line in (data_dir(args.database) / "pages.txt").read_text().splitlines()]
    print_machine(env["DATABASE_URL"])
    port = free_port()
    print(f"==> gunicorn on 127.0.0.1:{port}, 1 sync worker", flush=True)
    start_server(env, port)
    errors: list[str] = []
    results: list[tuple[str, list[float]]] = []
    try:
        cookies = {username: sign_in(port, username) for _, username, _ in pages}
        print(f"==> {args.warmup} warm-up and {args.requests} timed requests per page", flush=True)
        for path in ["/bare/"] + [path for _, _, path in pages]:
            cookie = next((cookies[user] for _, user, page in pages if page == path), "")
            run(port, path, args.warmup, cookie, errors)
        for kind, username, path in [("", "", "/bare/"), *pages]:
            cookie = cookies.get(username, "")
            results.append((f"{kind:<9}{path}" if kind else path, run(port, path, args.requests, cookie, errors)))
            print(f"  {path}: done", flush=True)
    finally:
        stop_server()
    bare = stats(results[0][1])
    print(f"\n{'page':<100} {'n':>4} {'median':>8} {'p95':>8} {'p99':>8} {'x bare':>7}  (ms)")
    for label, values in results:
        s = stats(values)
        ratio = s["median"] / bare["median"]
        print(f"{label:<100} {len(values):>4} {s['median']:>8.1f} {s['p95']:>8.1f} {s['p99']:>8.1f} {ratio:>7.1f}")
    checks = [
        (
            f"{label.split()[-1]}: median {stats(values)['median']:.0f} ms < {TARGET_MS:.0f} ms",
            stats(values)["median"] < TARGET_MS,
        )
        for label, values in results[1:]
    ]
    checks.append((f"every response 200 ({len(errors)} failures)", not errors))
    return verdict(checks, errors)


if __name__ == "__main__":
    sys.exit(main())
