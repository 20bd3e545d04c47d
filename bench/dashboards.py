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
from typing import Any

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
    """A working month on the national data set; writes the page paths to ``pages.txt``."""
    import random
    from datetime import timedelta
    from decimal import Decimal

    from django.conf import settings
    from django.db.models import Count
    from django.utils import timezone

    from billing.models import Invoice, UsageMetric, UsageRollup
    from billing.periods import month_of
    from billing.services.invoices import invoice_finalize
    from billing.services.usage import invoices_for_usage
    from core.exceptions import ApplicationError
    from marketplace.dispatch import Requirements
    from marketplace.models import Lease
    from marketplace.services import lease_start, order_place
    from organizations.models import Organization
    from organizations.services import member_set
    from pools.models import Heartbeat, PricePlan
    from vouchers import services as voucher_services
    from vouchers.issuing import VoucherRequest

    rng = random.Random(42)
    now = timezone.now()
    this_month, _ = month_of(now)
    last_month, _ = month_of(this_month - timedelta(days=1))
    started = time.monotonic()
    # Prices in force from before last month: the seed made them "now".
    PricePlan.objects.update(effective_from=last_month - timedelta(days=60))
    national = Organization.objects.filter(slug__startswith="nat-")
    buyers = list(national.filter(kind="buyer").order_by("slug")[:300])
    gpus = ["910B", "H20", "H100-80G", "A800-80G", "4090-24G", "L40S"]
    for n in range(ORDERS):
        workload = rng.choice(["training", "batch_inference", "realtime_inference"])
        requirements = Requirements(
            cards=rng.choice([8, 8, 16, 32]),
            duration_hours=24 * 30,
            workload=workload,
            gpu_model=rng.choice(gpus),
            user_region="shanghai" if workload == "realtime_inference" else None,
            max_latency_ms=60 if workload == "realtime_inference" else None,
        )
        try:
            order = order_place(buyer=buyers[n % len(buyers)], requirements=requirements, now=now)
        except ApplicationError:
            continue
        for lease in order.leases.all():
            lease_start(lease_id=lease.pk, by="bench", now=now)
    leases = list(Lease.objects.select_related("pool"))
    print(f"  {len(leases)} leases placed ({time.monotonic() - started:.0f} s)", flush=True)

    plans = dict(PricePlan.objects.values_list("pool_id", "pk"))
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=USAGE_DAYS)

    def rollup(lease: Any, hour: Any, share: float = 1) -> UsageRollup:
        return UsageRollup(
            lease=lease,
            pool_id=lease.pool_id,
            buyer_id=lease.buyer_id,
            provider_id=lease.provider_id,
            metric=UsageMetric.GPU_SECONDS,
            hour=hour,
            price_plan_id=plans[lease.pool_id],
            quantity=Decimal(lease.cards * 3600 * share),
            events=60,
        )

    rollups = [
        rollup(lease, first_hour + timedelta(hours=h), rng.choice([1, 1, 1, 0.75, 0.5]))
        for lease in leases
        for h in range(24 * USAGE_DAYS)
    ]
    # Last month: a day of usage for some leases, finalized below.
    rollups += [
        rollup(lease, last_month + timedelta(days=10, hours=h))
        for lease in leases[:LAST_MONTH_LEASES]
        for h in range(24)
    ]
    UsageRollup.objects.bulk_create(rollups, batch_size=5000)
    months = {(lease.buyer_id, month) for lease in leases for month in {month_of(first_hour), month_of(now)}}
    months |= {(lease.buyer_id, (last_month, this_month)) for lease in leases[:LAST_MONTH_LEASES]}
    invoices_for_usage(months=months)
    print(f"  {len(rollups):,} hourly rollups ({time.monotonic() - started:.0f} s)", flush=True)

    issuer = national.get(kind="issuer")
    program = voucher_services.program_create(
        issuer=issuer,
        name="Compute vouchers (bench)",
        budget=100_000_000_00,
        coverage_share=Decimal("0.3"),
        per_company_yearly_cap=50_000_00,
        valid_from=last_month - timedelta(days=30),
        valid_until=now + timedelta(days=365),
        by="bench",
        now=last_month - timedelta(days=30),
    )
    program = voucher_services.program_open(program=program, by="bench", now=last_month - timedelta(days=30))
    holders = {lease.buyer for lease in leases} | set(national.filter(kind="buyer").order_by("slug")[:VOUCHER_BUYERS])
    voucher_services.vouchers_issue(
        program=program,
        requests=[VoucherRequest(organization=buyer, face_value=15_000_00, valid_until=None) for buyer in holders],
        by="bench",
        now=last_month - timedelta(days=30),
    )
    finalized_at = min(now, this_month + timedelta(days=2))
    drafts = Invoice.objects.filter(status="draft", period_start=last_month).values_list("pk", flat=True)
    for invoice_id in drafts:
        invoice_finalize(invoice_id=invoice_id, now=finalized_at)
    print(f"  {len(drafts)} invoices of last month finalized ({time.monotonic() - started:.0f} s)", flush=True)

    top = Lease.objects.values("provider_id").annotate(n=Count("pk")).order_by("-n")[0]["provider_id"]
    provider = Organization.objects.get(pk=top)
    pool_ids = list(provider.pools.values_list("pk", flat=True))
    Heartbeat.objects.bulk_create(
        [
            Heartbeat(pool_id=pool_id, healthy_cards=0, observed_at=now - timedelta(minutes=m))
            for pool_id in pool_ids
            for m in range(1, 24 * 60)
        ],
        batch_size=5000,
        ignore_conflicts=True,
    )
    buyer_id = (
        Lease.objects.filter(buyer__invoices__period_start=last_month)
        .values("buyer_id")
        .annotate(n=Count("pk"))
        .order_by("-n")[0]["buyer_id"]
    )
    buyer = Organization.objects.get(pk=buyer_id)
    operator = Organization.objects.get(kind="operator", slug__startswith="nat-")
    invoice = Invoice.objects.get(buyer=buyer, period_start=last_month)
    lines = []
    for organization in (operator, issuer, buyer, provider):
        member_set(organization=organization, username=f"bench-{organization.kind}", password=PASSWORD)
        lines.append(f"{organization.kind} bench-{organization.kind} /dashboard/{organization.slug}/")
    lines.append(f"issuer bench-issuer /dashboard/{issuer.slug}/programs/{program.pk}/")
    lines.append(f"buyer bench-buyer /dashboard/{buyer.slug}/invoices/{invoice.pk}/")
    lines.append(f"buyer bench-buyer /dashboard/{buyer.slug}/invoices/{invoice.pk}/pdf/")
    (Path(settings.DATA_DIR) / "pages.txt").write_text("\n".join(lines) + "\n")
    print(
        f"  provider {provider.slug}: {len(pool_ids)} pools; buyer {buyer.slug}; "
        f"{len(holders)} vouchers ({time.monotonic() - started:.0f} s)",
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
