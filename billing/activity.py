"""A working month of activity, built through the services: for the demo and the dashboards' benchmark.

``manage.py seed_activity`` gives the demo's organizations (``seed_demo``) a month as their
users would see it: the provider's pools approved and sending heartbeats, the buyer's leases on
them with hourly usage over the last week, the month before last finalized and overdue, last
month finalized and paid by bank transfer, a voucher program of the issuer that paid its share of
the buyer's inference, and compute-bank credit left. ``bench/dashboards.py`` builds the national
data set's month with ``national_month`` from the same pieces.

Orders are placed and leases started now, through the services; their hourly usage is written
as the rollups the metering would have made (backdated, as ingestion would refuse it), and the
pools' prices are made to be in force from before the first of it.
"""

import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet

from billing.models import Invoice, UsageMetric, UsageRollup
from billing.periods import month_of
from billing.services.bank.grants import grant_create
from billing.services.invoices import invoice_finalize
from billing.services.payments import bank_transfer_record
from billing.services.usage import invoices_for_usage
from core.exceptions import ApplicationError
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_start, order_place
from organizations.models import Organization
from pools.models import GpuModel, Heartbeat, PricePlan, ResourcePool
from pools.services import pool_approve, pool_heartbeat, pool_register
from vouchers import services as voucher_services
from vouchers.issuing import VoucherRequest
from vouchers.models import VoucherProgram

BY = "command:seed_activity"
HOUR = timedelta(hours=1)
USAGE_SHARES = [1, 1, 1, 0.75, 0.5]  # how busy a lease's cards are in an hour, drawn at random


def months_back(now: datetime) -> tuple[datetime, datetime, datetime]:
    """The starts of this month, last month and the month before, in the billing time zone."""
    this_month, _ = month_of(now)
    last_month, _ = month_of(this_month - timedelta(days=1))
    month_before, _ = month_of(last_month - timedelta(days=1))
    return this_month, last_month, month_before


def prices_in_force_since(pools: QuerySet[ResourcePool] | None, since: datetime) -> None:
    """The pools' prices (all pools' without ``pools``) in force from ``since``: a price is registered
    "now", and the backdated usage must find one to be rated."""
    plans = PricePlan.objects.all() if pools is None else PricePlan.objects.filter(pool__in=pools)
    plans.update(effective_from=since)


def usage_backfill(
    leases: Sequence[Lease],
    hours: Callable[[Lease], Iterable[datetime]],
    *,
    rng: random.Random,
    busy: Sequence[float] = USAGE_SHARES,
) -> int:
    """Hourly card-seconds of each lease in each of its ``hours``, as the rollups metering makes,
    and the draft invoices of the months they fall in; how many rollups."""
    plans = dict(PricePlan.objects.filter(pool_id__in={lease.pool_id for lease in leases}).values_list("pool_id", "pk"))
    rollups = [
        UsageRollup(
            lease=lease,
            pool_id=lease.pool_id,
            buyer_id=lease.buyer_id,
            provider_id=lease.provider_id,
            metric=UsageMetric.GPU_SECONDS,
            hour=hour,
            price_plan_id=plans[lease.pool_id],
            quantity=Decimal(lease.cards * 3600 * rng.choice(busy)),
            events=60,
        )
        for lease in leases
        for hour in hours(lease)
    ]
    UsageRollup.objects.bulk_create(rollups, batch_size=5000)
    invoices_for_usage(months={(rollup.buyer_id, month_of(rollup.hour)) for rollup in rollups})
    return len(rollups)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """The whole hours from ``start`` (an hour's start) to before ``end``."""
    count = int((end - start) / HOUR)
    return [start + HOUR * n for n in range(count)]


def drafts_finalize(*, period_start: datetime, at: datetime, buyers: Iterable[Organization] | None = None) -> list[Any]:
    """Finalize the month's draft invoices (of ``buyers`` only, if given) as of ``at``; their ids."""
    drafts = Invoice.objects.filter(status=Invoice.Status.DRAFT, period_start=period_start)
    if buyers is not None:
        drafts = drafts.filter(buyer__in=list(buyers))
    ids = list(drafts.values_list("pk", flat=True))
    for invoice_id in ids:
        invoice_finalize(invoice_id=invoice_id, now=at)
    return ids


def heartbeats_backfill(pool_ids: Sequence[Any], *, now: datetime, minutes: int, healthy: Callable[[Any], int]) -> None:
    """A heartbeat a minute from each pool over the last ``minutes``."""
    Heartbeat.objects.bulk_create(
        [
            Heartbeat(pool_id=pool_id, healthy_cards=healthy(pool_id), observed_at=now - timedelta(minutes=m))
            for pool_id in pool_ids
            for m in range(1, minutes)
        ],
        batch_size=5000,
        ignore_conflicts=True,
    )


def program_with_vouchers(
    *,
    issuer: Organization,
    name: str,
    holders: Iterable[Organization],
    opened: datetime,
    valid_until: datetime,
    budget: int,
    face_value: int,
    coverage_share: Decimal,
    per_company_yearly_cap: int,
    workloads: Sequence[str] = (),
    issued: datetime | None = None,
) -> VoucherProgram:
    """An open program that gave each of ``holders`` a voucher of ``face_value`` when it opened
    (or at ``issued``)."""
    program = voucher_services.program_create(
        issuer=issuer,
        name=name,
        budget=budget,
        coverage_share=coverage_share,
        per_company_yearly_cap=per_company_yearly_cap,
        valid_from=opened,
        valid_until=valid_until,
        workloads=workloads,
        by=BY,
        now=opened,
    )
    program = voucher_services.program_open(program=program, by=BY, now=opened)
    voucher_services.vouchers_issue(
        program=program,
        requests=[VoucherRequest(organization=buyer, face_value=face_value, valid_until=None) for buyer in holders],
        by=BY,
        now=issued or opened,
    )
    return program


# --- the national data set's month (bench/dashboards.py) ---------------------------


def national_month(
    *,
    now: datetime,
    orders: int,
    usage_days: int,
    last_month_leases: int,
    voucher_buyers: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Orders placed by the dispatcher for national buyers, ``usage_days`` of hourly usage for each
    lease, a day of last month's for some, those invoices finalized with vouchers paying their
    share, and a day of one-minute heartbeats for the provider with the most leases."""
    rng = random.Random(42)  # noqa: S311  # repeatable made-up activity, no secret
    this_month, last_month, _ = months_back(now)
    started = time.monotonic()
    prices_in_force_since(None, last_month - timedelta(days=60))
    national = Organization.objects.filter(slug__startswith="nat-")
    buyers = list(national.filter(kind="buyer").order_by("slug")[:300])
    gpus = ["910B", "H20", "H100-80G", "A800-80G", "4090-24G", "L40S"]
    for n in range(orders):
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
            lease_start(lease_id=lease.pk, by=BY, now=now)
    leases = list(Lease.objects.filter(buyer__in=national).select_related("pool"))
    say(f"  {len(leases)} leases placed ({time.monotonic() - started:.0f} s)")

    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=usage_days)
    rollups = usage_backfill(
        leases, lambda lease: hours_between(first_hour, first_hour + timedelta(days=usage_days)), rng=rng
    )
    last_month_day = last_month + timedelta(days=10)
    rollups += usage_backfill(
        leases[:last_month_leases],
        lambda lease: hours_between(last_month_day, last_month_day + timedelta(days=1)),
        rng=rng,
        busy=[1],
    )
    say(f"  {rollups:,} hourly rollups ({time.monotonic() - started:.0f} s)")

    issuer = national.get(kind="issuer")
    holders = {lease.buyer for lease in leases} | set(national.filter(kind="buyer").order_by("slug")[:voucher_buyers])
    program = program_with_vouchers(
        issuer=issuer,
        name="Compute vouchers (bench)",
        holders=holders,
        opened=last_month - timedelta(days=30),
        valid_until=now + timedelta(days=365),
        budget=100_000_000_00,
        face_value=15_000_00,
        coverage_share=Decimal("0.3"),
        per_company_yearly_cap=50_000_00,
    )
    finalized = drafts_finalize(period_start=last_month, at=min(now, this_month + timedelta(days=2)))
    say(f"  {len(finalized)} invoices of last month finalized ({time.monotonic() - started:.0f} s)")

    top = Lease.objects.values("provider_id").annotate(n=Count("pk")).order_by("-n")[0]["provider_id"]
    provider = Organization.objects.get(pk=top)
    pool_ids = list(provider.pools.values_list("pk", flat=True))
    heartbeats_backfill(pool_ids, now=now, minutes=24 * 60, healthy=lambda pool_id: 0)
    buyer_id = (
        Lease.objects.filter(buyer__invoices__period_start=last_month)
        .values("buyer_id")
        .annotate(n=Count("pk"))
        .order_by("-n")[0]["buyer_id"]
    )
    buyer = Organization.objects.get(pk=buyer_id)
    return {
        "operator": Organization.objects.get(kind="operator", slug__startswith="nat-"),
        "issuer": issuer,
        "buyer": buyer,
        "provider": provider,
        "program": program,
        "invoice": Invoice.objects.get(buyer=buyer, period_start=last_month),
        "pools": len(pool_ids),
        "vouchers": len(holders),
    }


# --- the demo organizations' month (make demo) ----------------------------------------

# name, hub, province, city, GPU model, cards, price per card-hour
DEMO_POOLS = [
    ("Zhongwei A800 training", "ningxia", "Ningxia", "Zhongwei", "A800-80G", 512, Decimal("9.8000")),
    ("Zhongwei 910B batch", "ningxia", "Ningxia", "Zhongwei", "910B", 1024, Decimal("7.2000")),
    ("Zhongwei H20 inference", "ningxia", "Ningxia", "Zhongwei", "H20", 256, Decimal("6.5000")),
    ("Qingyang L40S rendering", "gansu", "Gansu", "Qingyang", "L40S", 128, Decimal("4.2500")),
]
# pool (by index in DEMO_POOLS), cards, workload: the buyer's leases
DEMO_LEASES = [(0, 32, "training"), (2, 16, "batch_inference"), (3, 8, "batch_inference")]
DEMO_USAGE_DAYS = 7
DEMO_VOUCHER_HOLDERS = 24  # national buyers in the issuer's province given a voucher beside the demo buyer


def demo_month(
    *, now: datetime, operator: Organization, provider: Organization, buyer: Organization, issuer: Organization
) -> bool:
    """The demo organizations' working month; False (and nothing done) if the provider has pools already."""
    if provider.pools.exists():
        return False
    rng = random.Random(7)  # noqa: S311  # repeatable made-up activity, no secret
    this_month, last_month, month_before = months_back(now)
    gpus = GpuModel.objects.in_bulk([gpu for *_, gpu, _, _ in DEMO_POOLS])
    pools = []
    for name, hub, province, city, gpu, cards, price in DEMO_POOLS:
        pool = pool_register(
            provider=provider,
            name=name,
            hub_id=hub,
            province=province,
            city=city,
            gpu_model=gpus[gpu],
            cards=cards,
            price_per_card_hour=price,
            pue=Decimal("1.20"),
            green_share=Decimal("0.800"),
            by=BY,
        )
        pool = pool_approve(pool=pool, by=BY, reason="demo: checked")
        pools.append(pool_heartbeat(pool=pool, healthy_cards=cards, observed_at=now))
    prices_in_force_since(ResourcePool.objects.filter(provider=provider), month_before - timedelta(days=30))

    # The buyer's leases began a week ago (when this month's usage begins), booked for 30 days.
    hour = now.replace(minute=0, second=0, microsecond=0)
    began = hour - timedelta(days=DEMO_USAGE_DAYS)
    leases = []
    for index, cards, workload in DEMO_LEASES:
        requirements = Requirements(cards=cards, duration_hours=24 * 30, workload=workload, pool=pools[index].pk)
        order = order_place(buyer=buyer, requirements=requirements, now=began)
        leases += [lease_start(lease_id=lease.pk, by=BY, now=began) for lease in order.leases.all()]

    # The month before last: two days of one lease, finalized and left unpaid (overdue).
    # Last month: ten days of every lease, finalized and paid by bank transfer. This month: the last week.
    before_day = month_before + timedelta(days=12)
    usage_backfill(leases[:1], lambda lease: hours_between(before_day, before_day + timedelta(days=2)), rng=rng)
    last_days = last_month + timedelta(days=5)
    usage_backfill(leases, lambda lease: hours_between(last_days, last_days + timedelta(days=10)), rng=rng)
    usage_backfill(leases, lambda lease: hours_between(began, hour), rng=rng)

    # Vouchers for inference (the buyer's training is not eligible), to the buyer and companies of its province,
    # from the middle of last month: they paid part of it and have some left, well inside the yearly cap of
    # any other program of the issuer's (the README's journey opens one with a cap of 5,000 yuan).
    neighbours = Organization.objects.filter(kind="buyer", province=buyer.province, slug__startswith="nat-")
    program_with_vouchers(
        issuer=issuer,
        name="Zhejiang AI inference compute vouchers",
        holders=[buyer, *neighbours.order_by("slug")[:DEMO_VOUCHER_HOLDERS]],
        opened=month_before - timedelta(days=20),
        valid_until=this_month + timedelta(days=300),
        budget=2_000_000_00,
        face_value=4_000_00,
        coverage_share=Decimal("0.3"),
        per_company_yearly_cap=50_000_00,
        workloads=["batch_inference", "realtime_inference"],
        issued=last_month + timedelta(days=13),
    )
    drafts_finalize(period_start=month_before, at=last_month + timedelta(days=3), buyers=[buyer])
    (paid,) = drafts_finalize(period_start=last_month, at=min(now, this_month + timedelta(days=3)), buyers=[buyer])
    invoice = Invoice.objects.get(pk=paid)
    if invoice.amount_due:
        bank_transfer_record(
            invoice=invoice, amount=invoice.amount_due, by=BY, now=min(now, this_month + timedelta(days=4))
        )
    grant_create(buyer=buyer, source="promotion", amount=3_000_00, by=BY, note="demo: welcome credit", now=now)
    heartbeats_backfill(
        [pool.pk for pool in pools],
        now=now,
        minutes=6 * 60,
        healthy=lambda pool_id: next(p.cards for p in pools if p.pk == pool_id),
    )
    return True
