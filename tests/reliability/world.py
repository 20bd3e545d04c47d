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
from marketplace.models import Lease, Order
from marketplace.token_dispatch import TokenRequest
from marketplace.token_services import token_order_place
from organizations.models import ApiKey, Organization
from organizations.services import api_key_create, member_set
from pools.endpoints import endpoint_approve, endpoint_register
from pools.models import ModelEndpoint, ResourcePool
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
    usage(tenant.lease, timezone.now() - timedelta(hours=2))
    tenant.draft_invoice = invoice_for_period(buyer=tenant.buyer, at=timezone.now())
    with time_machine.travel(LEASED_AT, tick=False):
        tenant.program = program_factory(tenant.issuer, valid_until=datetime(2036, 1, 1, tzinfo=UTC))
        tenant.voucher = voucher_factory(tenant.program, tenant.buyer, now=LEASED_AT)
    grant_create(buyer=tenant.buyer, source=CreditGrant.Source.PROMOTION, amount=50_000, by="test")
    tenant.bank = bank_of(tenant.buyer)
    tenant.top_up = TopUp.objects.create(buyer=tenant.buyer, amount=10_000)  # pending: never sent to Stripe
    return tenant


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
