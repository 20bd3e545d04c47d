"""A small grid with something on every dashboard, made through the services.

One organization of each kind, each with a member who signs in; a second buyer
with an overdue invoice; the provider's pools in Beijing (one stale, one
suspended); last month's usage finalized into an invoice that a voucher partly
paid (so there is a statement, platform revenue and a redemption); this month's
usage on a lease placed three hours ago (so there is spend so far, a forecast
and a placement in the last day). Heartbeats are fresh for ``STALE_SECONDS``.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from billing.models import Invoice
from billing.periods import month_of
from billing.services.invoices import invoice_finalize
from marketplace.models import Lease
from marketplace.services import lease_start
from organizations.models import Organization
from organizations.services import member_set
from pools.models import ResourcePool
from pools.services import pool_heartbeat
from tests.billing.factories import credit, leased, usage
from tests.factories import BuyerFactory, IssuerFactory, OperatorFactory, ProviderFactory, pool_factory
from tests.vouchers.factories import YEAR_START, program_factory, voucher_factory
from vouchers.models import Voucher, VoucherProgram

PASSWORD = "correct horse battery staple"
STALE_SECONDS = 1800  # the tests' POOL_HEARTBEAT_STALE_SECONDS: long enough for a browser test


@dataclass
class Grid:
    now: datetime
    operator: Organization
    issuer: Organization
    buyer: Organization
    other_buyer: Organization
    provider: Organization
    program: VoucherProgram
    voucher: Voucher
    lease: Lease
    invoice: Invoice
    overdue: Invoice
    stale_pool: ResourcePool
    suspended_pool: ResourcePool
    users: dict[str, str] = field(default_factory=dict)

    def organizations(self) -> list[Organization]:
        return [self.operator, self.issuer, self.buyer, self.provider]


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def build_grid(now: datetime | None = None) -> Grid:
    now = now or timezone.now()
    this_month, _ = month_of(now)
    last_month, _ = month_of(this_month - timedelta(days=1))
    month_before, _ = month_of(last_month - timedelta(days=1))
    operator, issuer, provider = OperatorFactory(), IssuerFactory(), ProviderFactory()
    buyer, other_buyer = BuyerFactory(province="Zhejiang"), BuyerFactory(province="Jiangsu")
    users = {}
    for organization in (operator, issuer, provider, buyer, other_buyer):
        member_set(organization=organization, username=f"{organization.slug}-user", password=PASSWORD)
        users[organization.slug] = f"{organization.slug}-user"

    program = program_factory(issuer, name="Zhejiang compute vouchers", valid_until=now + timedelta(days=365))
    voucher = voucher_factory(program, buyer, face_value=2_000_000, now=max(YEAR_START, month_before))

    # Last month: usage finalized into an invoice, partly paid by the voucher.
    earlier = leased(buyer=buyer, provider=provider, at=last_month - timedelta(days=2))
    for day in range(3):
        usage(earlier, last_month + timedelta(days=day, hours=4), seconds=8 * 3600)
    invoice = Invoice.objects.get(buyer=buyer, period_start=last_month)
    invoice = invoice_finalize(invoice_id=invoice.pk, now=now)
    credit(buyer, 50_000, at=now)  # compute-bank credit left for this month

    # The other buyer's invoice of the month before, unpaid for weeks.
    theirs = leased(buyer=other_buyer, provider=provider, at=month_before - timedelta(days=2))
    usage(theirs, month_before + timedelta(days=1, hours=4), seconds=8 * 3600)
    overdue = Invoice.objects.get(buyer=other_buyer, period_start=month_before)
    overdue = invoice_finalize(invoice_id=overdue.pk, now=last_month + timedelta(days=3))

    # This month: a lease placed three hours ago, running, with two hours of usage.
    lease = leased(buyer=buyer, provider=provider, at=now - timedelta(hours=3))
    lease = lease_start(lease_id=lease.pk, by="test", now=now - timedelta(hours=3))
    for hours_ago in (2, 1):
        usage(lease, _hour(now) - timedelta(hours=hours_ago), seconds=6 * 3600)
    for minutes_ago in (20, 10):
        pool_heartbeat(pool=lease.pool, healthy_cards=100, observed_at=now - timedelta(minutes=minutes_ago))
    for pool in (earlier.pool, theirs.pool):
        pool_heartbeat(pool=pool, healthy_cards=100, observed_at=now - timedelta(minutes=5))

    stale_pool = pool_factory(
        provider=provider,
        name="stale",
        hub_id="jingjinji",
        province="Beijing",
        last_heartbeat_at=now - timedelta(hours=1),
    )
    suspended_pool = pool_factory(
        provider=provider,
        name="suspended",
        hub_id="jingjinji",
        province="Beijing",
        status=ResourcePool.Status.SUSPENDED,
    )
    return Grid(
        now=now,
        operator=operator,
        issuer=issuer,
        buyer=buyer,
        other_buyer=other_buyer,
        provider=provider,
        program=program,
        voucher=voucher,
        lease=lease,
        invoice=invoice,
        overdue=overdue,
        stale_pool=stale_pool,
        suspended_pool=suspended_pool,
        users=users,
    )


def api_get(client: Any, path: str) -> Any:
    """Every page of a list (or the one object) the API answers at ``path``."""
    answer = client.get(path)
    assert answer.status_code == 200, answer.content[:300]
    data = answer.json()
    if not isinstance(data, dict) or "results" not in data:
        return data
    results = data["results"]
    while data.get("next"):
        data = client.get(data["next"]).json()
        results += data["results"]
    return results
