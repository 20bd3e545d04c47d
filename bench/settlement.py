"""Benchmark month-end settlement: finalize a month for 10,000 buyers with 10 million hourly rollups.

    .venv/bin/python bench/settlement.py [--buyers 10000] [--hours 720] [--token-hours 140] [--processes 2] [--reuse]

On a fresh PostgreSQL database with the national data set, every buyer gets one
lease and, for a closed month, an hourly card-seconds rollup for each hour plus
input and output token rollups for ``--token-hours`` hours: 10,000 x (720 + 2 x
140) = 10 million rows. Timed: the settlement scan that finds the drafts (made as usage is rolled up; here
by the set-up, as the rollup task would), and
the finalization of every invoice (rating, lines, ledger, statements, numbers)
by ``--processes`` worker processes in batches of BILLING_FINALIZE_BATCH_SIZE, as
the Celery ``settle`` queue's ``invoices_finalize`` tasks would. Printed
beside a bare SQL aggregate of the same rows by buyer, lease, metric, model,
price version and local hour, the physical limit, as a ratio; then
``reconcile`` must be clean. Target: under 5 minutes.

Building the data takes minutes: ``--reuse`` keeps the built database as a
template and later runs with the same sizes start from a copy of it.
"""

import argparse
import multiprocessing
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    database_exists,
    environment,
    manage,
    national_database,
    print_machine,
    recreate_database,
    verdict,
)

TARGET_SECONDS = 300


def build_usage(
    database_url: str, *, buyers: int, hours: int, token_hours: int, month_start: Any, month_end: Any
) -> int:
    """Buyers, one running lease each, and the month's hourly rollups, written with plain SQL.

    A bulk load of consistent rows: foreign-key triggers are off for this session
    (millions of deferred checks would otherwise pile up until commit).
    """
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SELECT count(*) FROM organizations_organization WHERE kind = 'buyer'")
        existing = cursor.fetchone()[0]  # type: ignore[index]
        if buyers > existing:
            print(f"  adding {buyers - existing:,} buyers", flush=True)
            cursor.execute(
                """
                INSERT INTO organizations_organization (id, kind, slug, legal_name, credit_code, province, city,
                    is_sme, is_active, orders_blocked_reason, created_at)
                SELECT gen_random_uuid(), 'buyer', 'bench-buyer-' || n, 'Bench Buyer ' || n || ' Co., Ltd.',
                    '91BENCH' || lpad(n::text, 11, '0'), 'Zhejiang', 'Hangzhou', true, true, '', now()
                FROM generate_series(1, %s) AS n
                """,
                [buyers - existing],
            )
        # Prices in force from before the month: the seed made them "now".
        cursor.execute("UPDATE pools_priceplan SET effective_from = %s - interval '60 days'", [month_start])
        print("  orders and leases", flush=True)
        cursor.execute(
            """
            CREATE TEMP TABLE bench_pairs AS
            SELECT b.id AS buyer_id, p.id AS pool_id, p.provider_id, p.gpu_model_id, gen_random_uuid() AS order_id,
                   gen_random_uuid() AS lease_id,
                   (SELECT pp.id FROM pools_priceplan pp WHERE pp.pool_id = p.id
                    ORDER BY pp.effective_from DESC LIMIT 1) AS plan_id
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM organizations_organization
                  WHERE kind = 'buyer' ORDER BY id LIMIT %s) b
            JOIN (SELECT id, provider_id, gpu_model_id, row_number() OVER (ORDER BY id) - 1 AS n,
                         count(*) OVER () AS total FROM pools_resourcepool WHERE status = 'active') p
              ON p.n = b.n %% p.total
            """,
            [buyers],
        )
        cursor.execute(
            """
            INSERT INTO marketplace_order (id, buyer_id, status, gpu_model_id, cards, workload, user_region,
                duration_hours, allowed_hubs, split, estimated_cost, currency, warnings, created_at)
            SELECT order_id, buyer_id, 'placed', gpu_model_id, 8, 'training', '', 720, '[]', false, 0, 'CNY', '[]',
                   now()
            FROM bench_pairs
            """
        )
        cursor.execute(
            """
            INSERT INTO marketplace_lease (id, order_id, buyer_id, provider_id, pool_id, cards, workload, status,
                start_at, end_at, started_at, end_reason, ended_by, estimated_cost, created_at)
            SELECT lease_id, order_id, buyer_id, provider_id, pool_id, 8, 'training', 'running',
                %(start)s, %(start)s + interval '31 days', %(start)s, '', '', 0, now()
            FROM bench_pairs
            """,
            {"start": month_start},
        )
        print(f"  rollups: {buyers:,} leases x ({hours} + 2 x {token_hours}) hours", flush=True)
        started = time.monotonic()
        for metric, model, count, quantity in (
            ("gpu_seconds", "", hours, 8 * 3600),
            ("input_tokens", "deepseek-v3", token_hours, 2_000_000),
            ("output_tokens", "deepseek-v3", token_hours, 500_000),
        ):
            cursor.execute(
                """
                INSERT INTO billing_usagerollup (lease_id, pool_id, buyer_id, provider_id, metric, model, hour,
                    price_plan_id, quantity, events, billed_quantity, updated_at)
                SELECT x.lease_id, x.pool_id, x.buyer_id, x.provider_id, %(metric)s, %(model)s,
                       %(start)s + h * interval '1 hour', x.plan_id, %(quantity)s, 60, 0, now()
                FROM bench_pairs x CROSS JOIN generate_series(0, %(last)s) AS h
                """,
                {"metric": metric, "model": model, "start": month_start, "quantity": quantity, "last": count - 1},
            )
            connection.commit()
            print(f"    {metric}: done ({time.monotonic() - started:.0f} s)", flush=True)
        # The drafts the rollup task makes as usage arrives (invoices_for_usage).
        cursor.execute(
            """
            INSERT INTO billing_invoice (id, buyer_id, period_start, period_end, status, currency,
                collection_method, subtotal, voucher_credit, bank_credit, amount_due, amount_paid,
                payment_attempts, voided_by, created_at)
            SELECT gen_random_uuid(), buyer_id, %(start)s, %(end)s, 'draft', 'CNY', 'stripe',
                   0, 0, 0, 0, 0, 0, '', now()
            FROM bench_pairs
            """,
            {"start": month_start, "end": month_end},
        )
        cursor.execute("SELECT count(*) FROM billing_usagerollup")
        rows = cursor.fetchone()[0]  # type: ignore[index]
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return int(rows)


def bare_aggregate(database_url: str) -> float:
    """The same grouping the rating needs, as one SQL aggregate over all rows: seconds."""
    with psycopg.connect(database_url) as connection:
        started = time.perf_counter()
        connection.execute(
            """
            SELECT buyer_id, lease_id, metric, model, price_plan_id,
                   extract(hour FROM hour AT TIME ZONE 'Asia/Shanghai')::int, sum(quantity - billed_quantity)
            FROM billing_usagerollup GROUP BY 1, 2, 3, 4, 5, 6
            """
        ).fetchall()
        return time.perf_counter() - started


def _finalize_batch(invoice_ids: list[str]) -> int:
    """What one ``invoices_finalize`` task of the settle queue does."""
    import django

    django.setup()
    from billing.services.invoices import invoices_finalize

    return invoices_finalize(invoice_ids=invoice_ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=720)
    parser.add_argument("--token-hours", type=int, default=140)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--database", default="compute_grid_bench_settlement")
    parser.add_argument("--reuse", action="store_true", help="keep the built data as a template; start from it")
    args = parser.parse_args()

    env = environment(args.database)
    template = f"{args.database}_{args.buyers}_{args.hours}_{args.token_hours}"
    built = args.reuse and database_exists(template)
    if built:
        print(f"==> database {args.database}: a copy of {template}", flush=True)
        recreate_database(args.database, template=template)
        manage(env, "migrate", "-v0")  # the template may predate a migration
    else:
        national_database(env, database=args.database)
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections
    from django.utils import timezone

    from billing.models import UsageRollup
    from billing.periods import month_of
    from billing.services.invoices import invoices_due_for_finalizing
    from billing.services.reconcile import reconcile

    if built:
        rows = UsageRollup.objects.count()
    else:
        month_start, month_end = month_of(
            month_of(month_of(timezone.now())[0] - timedelta(days=1))[0] - timedelta(days=1)
        )
        print(f"==> usage of the month from {month_start:%Y-%m-%d}", flush=True)
        rows = build_usage(
            env["DATABASE_URL"],
            buyers=args.buyers,
            hours=args.hours,
            token_hours=args.token_hours,
            month_start=month_start,
            month_end=month_end,
        )
        if args.reuse:
            connections.close_all()
            recreate_database(template, template=args.database)
    print(f"  {rows:,} rollup rows")
    print_machine(env["DATABASE_URL"])

    print("==> bare SQL aggregate of the same rows", flush=True)
    aggregate_seconds = bare_aggregate(env["DATABASE_URL"])
    print(f"  {aggregate_seconds:.1f} s")

    print(f"==> settlement: scan, then finalize with {args.processes} processes", flush=True)
    started = time.monotonic()
    invoice_ids = [str(pk) for pk in invoices_due_for_finalizing(now=timezone.now())]
    scanned = time.monotonic() - started
    print(f"  scan found {len(invoice_ids):,} invoices to finalize in {scanned:.1f} s", flush=True)
    connections.close_all()
    size = settings.BILLING_FINALIZE_BATCH_SIZE
    batches = [invoice_ids[start : start + size] for start in range(0, len(invoice_ids), size)]
    done = 0
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        for finished in pool.imap_unordered(_finalize_batch, batches):
            done += finished
            print(f"  finalized {done:,}/{len(invoice_ids):,} ({time.monotonic() - started:.0f} s)", flush=True)
    settle_seconds = time.monotonic() - started

    print("==> reconcile", flush=True)
    differences = reconcile()
    from billing.models import Invoice

    finalized = Invoice.objects.exclude(status="draft").count()
    print(f"\n{'':40}{'seconds':>10}")
    print(f"{'settlement (scan + finalize all)':40}{settle_seconds:>10.1f}")
    print(f"{'bare SQL aggregate of the rows':40}{aggregate_seconds:>10.1f}")
    print(f"ratio settlement / bare aggregate: {settle_seconds / aggregate_seconds:.1f}x")
    print(f"rows per second settled: {rows / settle_seconds:,.0f}")
    checks = [
        (f"settled in {settle_seconds:.0f} s < {TARGET_SECONDS} s", settle_seconds < TARGET_SECONDS),
        (f"{finalized:,} invoices finalized of {args.buyers:,}", finalized == args.buyers),
        (f"reconcile clean ({len(differences)} differences)", not differences),
    ]
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
