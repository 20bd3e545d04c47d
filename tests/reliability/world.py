"""A small marketplace with two tenants of every kind, made through the services.

The reliability tests attack the API with it: the fuzzer so that the ids it sends
resolve, the isolation test so that tenant B's key is pointed at tenant A's objects.
Every object of tenant A has a twin of tenant B.
"""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import time_machine
from django.db import models
from django.utils import timezone

from billing.models import Bank, CreditGrant, Invoice, TopUp
from billing.services.bank.grants import bank_of, grant_create
from billing.services.invoices import invoice_finalize, invoice_for_period
from marketplace.deposits import deposit_create
from marketplace.dispatch import Requirements
from marketplace.models import CapacityDeposit, Lease, Order
from marketplace.services import order_place
from marketplace.token_dispatch import TokenRequest
from marketplace.token_services import token_order_place
from orbit import reference_data as orbit_data
from orbit.models import Dataset, Satellite
from orbit.services import orbit_reference_load, satellite_add
from organizations.models import ApiKey, Organization
from organizations.services import api_key_create, member_set
from pools.endpoints import endpoint_approve, endpoint_register
from pools.models import GpuModel, ModelEndpoint, ResourcePool
from tests.billing.factories import leased, usage
from tests.factories import BuyerFactory, IssuerFactory, OperatorFactory, ProviderFactory, pool_factory
from tests.vouchers.factories import program_factory, voucher_factory
from vouchers.models import Voucher, VoucherProgram

KINDS = ("buyer", "provider", "issuer", "operator")
LEASED_AT = datetime(2026, 2, 20, tzinfo=UTC)
USED_AT = datetime(2026, 3, 3, 4, tzinfo=UTC)  # noon in Shanghai
FINALIZED_AT = datetime(2026, 4, 5, tzinfo=UTC)


@dataclass
class Tenant:
    """One tenant's organizations, keys and objects."""

    buyer: Organization
    provider: Organization
    issuer: Organization
    keys: dict[str, str] = field(default_factory=dict)  # kind -> clear admin key
    spare_keys: dict[str, ApiKey] = field(default_factory=dict)  # kind -> a key that may be revoked
    members: dict[str, Any] = field(default_factory=dict)  # kind -> a user who signs in to its dashboard
    pool: ResourcePool | None = None
    pending_pool: ResourcePool | None = None
    order: Order | None = None
    lease: Lease | None = None
    endpoint: ModelEndpoint | None = None  # an approved model endpoint on its pool
    token_order: Order | None = None  # its buyer's token order on that endpoint
    invoice: Invoice | None = None  # finalized
    draft_invoice: Invoice | None = None
    program: VoucherProgram | None = None
    voucher: Voucher | None = None
    bank: Bank | None = None  # the buyer's compute bank, with a promotional grant
    top_up: TopUp | None = None
    satellite: Satellite | None = None  # a pool of the orbit hub
    dataset: Dataset | None = None  # the buyer's data, held on the provider's satellite
    claim: Any = None  # a subsidy claim on the tenant's program
    payout_run: Any = None  # a run (operators' only) with a line paying the tenant's provider
    payout_line: Any = None
    fapiao: Any = None  # the finalized invoice's fapiao, issued with its file
    deposit: CapacityDeposit | None = None  # cards of its buyer's reserved lease deposited into the compute bank

    def organization(self, kind: str, operator: Organization) -> Organization:
        return operator if kind == "operator" else getattr(self, kind)

    def objects(self) -> dict[str, models.Model]:
        """Every object of the tenant, by the URL parameter that names it."""
        return {
            "pool_id": self.pool,
            "order_id": self.order,
            "lease_id": self.lease,
            "endpoint_id": self.endpoint,
            "token_order_id": self.token_order,
            "invoice_id": self.invoice,
            "program_id": self.program,
            "voucher_id": self.voucher,
            "top_up_id": self.top_up,
            "dataset_id": self.dataset,
            "claim_id": self.claim,
            "run_id": self.payout_run,
            "line_id": self.payout_line,
            "request_id": self.fapiao,
            "deposit_id": self.deposit,
        }  # type: ignore[return-value]


@dataclass
class World:
    operator: Organization
    operator_key: str
    a: Tenant
    b: Tenant

    def key(self, kind: str, tenant: str = "a") -> str:
        return self.operator_key if kind == "operator" else getattr(self, tenant).keys[kind]


def _key(organization: Organization, name: str = "reliability") -> str:
    return api_key_create(organization=organization, name=name, created_by="test")[1]


def _tenant(hub: str, province: str) -> Tenant:
    """Each tenant's pool in a hub of its own, so that its buyer's order is placed on its provider's pool."""
    tenant = Tenant(buyer=BuyerFactory(), provider=ProviderFactory(), issuer=IssuerFactory())
    for kind in ("buyer", "provider", "issuer"):
        organization = getattr(tenant, kind)
        tenant.keys[kind] = _key(organization)
        tenant.spare_keys[kind] = api_key_create(organization=organization, name="spare", created_by="test")[0]
        membership = member_set(organization=organization, username=f"{organization.slug}-member", password="unused")
        tenant.members[kind] = membership.user
    tenant.lease = leased(buyer=tenant.buyer, provider=tenant.provider, at=LEASED_AT, hub_id=hub, province=province)
    tenant.order = tenant.lease.order
    tenant.pool = tenant.lease.pool
    assert tenant.pool.provider_id == tenant.provider.pk, "the tenant's lease is on another tenant's pool"
    tenant.pending_pool = pool_factory(provider=tenant.provider, status=ResourcePool.Status.PENDING, name="pending")
    tenant.endpoint, tenant.token_order = _token_order(tenant)
    usage(tenant.lease, USED_AT, seconds=8 * 3600)
    march = invoice_for_period(buyer=tenant.buyer, at=USED_AT)
    tenant.invoice = invoice_finalize(invoice_id=march.pk, now=FINALIZED_AT)
    tenant.fapiao = _fapiao(tenant)
    usage(tenant.lease, timezone.now() - timedelta(hours=2))
    tenant.draft_invoice = invoice_for_period(buyer=tenant.buyer, at=timezone.now())
    with time_machine.travel(LEASED_AT, tick=False):
        tenant.program = program_factory(tenant.issuer, valid_until=datetime(2036, 1, 1, tzinfo=UTC))
        tenant.voucher = voucher_factory(tenant.program, tenant.buyer, now=LEASED_AT)
    grant_create(buyer=tenant.buyer, source=CreditGrant.Source.PROMOTION, amount=50_000, by="test")
    tenant.bank = bank_of(tenant.buyer)
    tenant.top_up = TopUp.objects.create(buyer=tenant.buyer, amount=10_000)  # pending: never sent to Stripe
    orbit_reference_load()
    satellite_pool = pool_factory(
        provider=tenant.provider,
        name="satellite",
        hub_id=orbit_data.HUB_CODE,
        province="Orbit",
        gpu_model=GpuModel.objects.get(code=orbit_data.GPU_MODEL["code"]),
        cards=1,
    )
    tenant.satellite = satellite_add(pool=satellite_pool, slot=Satellite.objects.count())
    tenant.dataset = Dataset.objects.create(
        provider=tenant.provider,
        buyer=tenant.buyer,
        satellite=tenant.satellite,
        size_gb=10,
        captured_at=timezone.now(),
        region="isolation",
    )
    _settlements(tenant)
    tenant.deposit = _deposit(tenant)
    return tenant


def _deposit(tenant: Tenant) -> CapacityDeposit:
    """A reserved lease of 4 cards for a day on the tenant's pool, 2 of them deposited from the next hour."""
    assert tenant.pool is not None
    now = timezone.now()
    ResourcePool.objects.filter(pk=tenant.pool.pk).update(last_heartbeat_at=now)
    requirements = Requirements(
        cards=4, duration_hours=24, workload="training", pool=tenant.pool.pk, commitment="reserved"
    )
    lease = order_place(buyer=tenant.buyer, requirements=requirements).leases.get()
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return deposit_create(lease=lease, depositor=tenant.buyer, cards=2, start_at=next_hour, by="test")


def _settlements(tenant: Tenant) -> None:
    """A claim on the tenant's program, and a payout run paying its provider (rows only: no money moves)."""
    from settlements.models import PayoutLine, PayoutRun, SubsidyClaim
    from settlements.services.accounts import payout_account_set

    assert tenant.program is not None
    start, end = tenant.invoice.period_start, tenant.invoice.period_end  # type: ignore[union-attr]
    tenant.claim = SubsidyClaim.objects.create(
        number=f"CL-TEST-{tenant.program.pk}"[:40],
        program=tenant.program,
        issuer=tenant.issuer,
        period_start=start,
        period_end=end,
        created_at=timezone.now(),
    )
    account = payout_account_set(
        provider=tenant.provider,
        account_name=tenant.provider.legal_name,
        bank_name="Bank",
        branch="Branch",
        account_number="62220000111122223333",
        by="test",
    )
    tenant.payout_run = PayoutRun.objects.create(
        period_start=start, period_end=end, minimum=1, reserve_rate=0, created_by="test", created_at=timezone.now()
    )
    tenant.payout_line = PayoutLine.objects.create(
        run=tenant.payout_run, number=1, provider=tenant.provider, account=account, amount=1
    )


def _fapiao(tenant: Tenant) -> Any:
    """The buyer's invoicing details, and an issued fapiao (with its file) of its finalized invoice."""
    from billing.models import FapiaoRequest
    from billing.services.fapiao import Upload, fapiao_issue, fapiao_request
    from organizations.services import invoicing_details_set

    assert tenant.invoice is not None
    invoicing_details_set(
        organization=tenant.buyer, title=tenant.buyer.legal_name, taxpayer_id=tenant.buyer.credit_code, by="test"
    )
    request, _ = fapiao_request(invoice=tenant.invoice, kind="ordinary", by="test")
    return fapiao_issue(
        request_id=request.pk,
        number=f"{26110000000000000000 + FapiaoRequest.objects.count():020d}",
        code="",
        issued_on=FINALIZED_AT.date(),
        upload=Upload(name="fapiao.pdf", content=b"%PDF-1.7 isolation"),
        by="test",
    )


def _token_order(tenant: Tenant) -> tuple[ModelEndpoint, Order]:
    """An approved endpoint on the tenant's pool and its buyer's token order on it, placed while the
    pool's heartbeat (of LEASED_AT) was fresh."""
    assert tenant.pool is not None
    with time_machine.travel(LEASED_AT + timedelta(minutes=1), tick=False):
        endpoint = endpoint_register(
            provider=tenant.provider,
            pool=tenant.pool,
            model="deepseek-v3",
            input_price=Decimal("2.00"),
            output_price=Decimal("8.00"),
            throughput_per_card=2000,
            cards=4,
            by="test",
        )
        endpoint = endpoint_approve(endpoint=endpoint, by="operator")
    with time_machine.travel(LEASED_AT + timedelta(minutes=2), tick=False):
        request = TokenRequest(
            model="deepseek-v3", input_tokens=1000, output_tokens=1000, workload="realtime", user_region="beijing"
        )
        order = token_order_place(
            buyer=tenant.buyer, request=replace(request, max_latency_ms=1000), endpoint_id=endpoint.pk, by="test"
        )
    return endpoint, order


def build_world() -> World:
    operator = OperatorFactory()
    return World(
        operator=operator,
        operator_key=_key(operator),
        a=_tenant("jingjinji", "Beijing"),
        b=_tenant("yangtze", "Shanghai"),
    )


def as_dict(obj: Any) -> dict[str, Any]:
    """A row's stored fields, to compare before and after a request."""
    obj.refresh_from_db()
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}
