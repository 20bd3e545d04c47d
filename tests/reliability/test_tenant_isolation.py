"""Tenant isolation over every route of the URL configuration.

Every route and method the views allow must have an entry in ROUTES; a route without
one fails the test by name, so a new endpoint cannot ship without its isolation check.
Tenant B's keys (buyer, provider, issuer) are pointed at tenant A's objects:

- a route naming an object answers 404 to B's key of the owning kind, and to any of B's
  keys exactly what it answers for an id that does not exist (403 or 404): nothing tells
  whether a foreign id exists;
- a list (or a report) shows none of tenant A's ids to any of B's keys;
- a body (or a filter) naming tenant A's objects is refused or finds nothing;
- none of A's rows changes;
- a PATCH or PUT never changes a field outside its serializer's writable set.

Operators are not a tenant: they see every tenant by design (docs/api.md).
"""

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.db import models
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.serializers import Serializer
from rest_framework.test import APIClient

from billing.models import ProviderStatement
from billing.serializers import BankSerializer, BankSettingsSerializer
from marketplace.serializers import LeaseSerializer, LeaseUpdateSerializer
from organizations.models import ApiKey
from pools.endpoint_serializers import EndpointRepriceSerializer, EndpointSerializer
from pools.serializers import PoolSerializer, PoolUpdateSerializer
from tests.reliability.conftest import write_figures
from tests.reliability.world import Tenant, World, as_dict

TENANT_KINDS = ("buyer", "provider", "issuer")
Body = Callable[[World], Any]


@dataclass(frozen=True)
class Exempt:
    """A public route: it holds no tenant's data."""

    reason: str


@dataclass(frozen=True)
class Public:
    """Open to any key and the same for all: every kind of key of both tenants gets the same 200."""

    reason: str


@dataclass(frozen=True)
class Detail:
    """Names one of tenant A's objects by ``param``. ``owners``: the kinds that own such objects and
    may use the route, whose B key must get exactly 404 (others may be refused by kind, 403)."""

    param: str
    owners: tuple[str, ...]
    body: Body | None = None


@dataclass(frozen=True)
class Listing:
    """Shows rows: none of tenant A's may appear to B. ``query``: filters naming A's objects."""

    queries: tuple[Body, ...] = ()


@dataclass(frozen=True)
class Create:
    """Makes something: ``foreign`` bodies name A's objects and must be refused (400/404/422)
    or, for usage events, rejected one by one; ``body`` is a plain valid body."""

    foreign: tuple[Body, ...] = ()
    body: Body | None = None
    catalog: bool = False  # answers with the public catalog: A's active pool and endpoint may appear, nothing else


@dataclass(frozen=True)
class Patch:
    """Changes A's object named by ``param``; only ``write`` serializer's fields may change."""

    param: str
    owner: str
    read: type[Serializer]
    write: type[Serializer]
    singleton: bool = False  # the caller's own (no id in the path): B's PATCH changes B's, never A's


@dataclass(frozen=True)
class Page:
    """A dashboard page or form (a signed-in member, not a key): ``<slug:slug>`` is an organization's page,
    ``param`` names one of its objects. B's members get 404 on A's pages and on A's objects under
    their own page, and see none of A's ids."""

    param: str | None = None


Check = Exempt | Public | Detail | Listing | Create | Patch | Page

REASON = {"reason": "isolation test"}


def _next_hour() -> str:
    return (timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).isoformat()


def _later() -> str:
    return (timezone.now() + timedelta(days=30)).isoformat()


ROUTES: dict[str, dict[str, Check]] = {
    # Public: documented in docs/api.md as open to anyone.
    "api/schema/": {"GET": Exempt("the OpenAPI schema")},
    "api/docs/": {"GET": Exempt("Swagger UI")},
    "healthz": {"GET": Exempt("liveness probe")},
    "readyz": {"GET": Exempt("readiness probe")},
    "metrics": {"GET": Exempt("Prometheus metrics: the operators' METRICS_TOKEN, no tenant data (tests/ops)")},
    "api/v1/hubs/": {
        "GET": Exempt("reference data: the 8 national hubs, and the orbit hub once a constellation is listed")
    },
    "api/v1/gpu-models/": {"GET": Exempt("reference data: GPU models")},
    "api/v1/webhooks/stripe/": {"POST": Exempt("Stripe's webhook: no key, signature checked")},
    # Organizations and keys.
    "api/v1/organizations/me/": {"GET": Listing()},
    "api/v1/api-keys/": {"GET": Listing(), "POST": Create(body=lambda w: {"name": "b's key"})},
    "api/v1/api-keys/<uuid:key_id>/": {"DELETE": Detail("key_id", ("buyer",))},
    "api/v1/audit-events/": {"GET": Listing(queries=(lambda w: {"organization": str(w.a.buyer.pk)},))},
    # Pools.
    "api/v1/pools/": {
        "GET": Listing(queries=(lambda w: {"hub": w.a.pool.hub_id},)),
        "POST": Create(
            body=lambda w: {
                "name": "b",
                "hub": "ningxia",
                "province": "Ningxia",
                "gpu_model": "H100-80G",
                "cards": 8,
                "price_per_card_hour": "10.00",
                "pue": "1.20",
                "green_share": "0.500",
            }
        ),
    },
    "api/v1/pools/<uuid:pool_id>/": {
        "GET": Detail("pool_id", ("provider",)),
        "PATCH": Patch("pool_id", "provider", read=PoolSerializer, write=PoolUpdateSerializer),
    },
    "api/v1/pools/<uuid:pool_id>/approve/": {"POST": Detail("pool_id", (), body=lambda w: REASON)},  # operators
    "api/v1/pools/<uuid:pool_id>/suspend/": {"POST": Detail("pool_id", (), body=lambda w: REASON)},  # operators
    "api/v1/pools/<uuid:pool_id>/retire/": {"POST": Detail("pool_id", ("provider",), body=lambda w: REASON)},
    "api/v1/pools/<uuid:pool_id>/heartbeat/": {
        "POST": Detail(
            "pool_id", ("provider",), body=lambda w: {"healthy_cards": 1, "observed_at": timezone.now().isoformat()}
        )
    },
    "api/v1/pools/<uuid:pool_id>/prices/": {
        "GET": Detail("pool_id", ("provider",)),
        "POST": Detail("pool_id", ("provider",), body=lambda w: {"price_per_card_hour": "99"}),
    },
    "api/v1/price-index/": {"GET": Public("the compute price index: market prices, no tenant's rows")},
    "api/v1/feed/": {"GET": Listing()},
    # A satellite's contacts are public to buyers (like offers); another provider gets 404.
    "api/v1/pools/<uuid:pool_id>/contacts/": {"GET": Detail("pool_id", ("provider",))},
    # Orbit: datasets are the buyer's, held by the provider's satellite.
    "api/v1/datasets/": {
        "GET": Listing(),
        "POST": Create(
            foreign=(
                lambda w: {
                    "buyer": w.b.buyer.slug,
                    "satellite": str(w.a.satellite.pool_id),
                    "size_gb": "1",
                    "captured_at": timezone.now().isoformat(),
                    "region": "b",
                },
            ),
            body=lambda w: {
                "buyer": w.b.buyer.slug,
                "satellite": str(w.b.satellite.pool_id),
                "size_gb": "1",
                "captured_at": timezone.now().isoformat(),
                "region": "b",
            },
        ),
    },
    "api/v1/datasets/<uuid:dataset_id>/": {"GET": Detail("dataset_id", ("buyer", "provider"))},
    "api/v1/endpoints/": {
        "GET": Listing(queries=(lambda w: {"pool": str(w.a.pool.pk)}, lambda w: {"model": "deepseek-v3"})),
        "POST": Create(
            foreign=(
                lambda w: {
                    "pool": str(w.a.pool.pk),
                    "model": "qwen3-32b",
                    "input_price": "1.00",
                    "output_price": "4.00",
                    "throughput_per_card": 1000,
                    "cards": 1,
                },
            )
        ),
    },
    "api/v1/endpoints/<uuid:endpoint_id>/": {
        "GET": Detail("endpoint_id", ("provider",)),
        "PATCH": Patch("endpoint_id", "provider", read=EndpointSerializer, write=EndpointRepriceSerializer),
    },
    "api/v1/endpoints/<uuid:endpoint_id>/approve/": {"POST": Detail("endpoint_id", (), body=lambda w: REASON)},
    "api/v1/endpoints/<uuid:endpoint_id>/suspend/": {"POST": Detail("endpoint_id", (), body=lambda w: REASON)},
    "api/v1/endpoints/<uuid:endpoint_id>/retire/": {
        "POST": Detail("endpoint_id", ("provider",), body=lambda w: REASON)
    },
    # Demand.
    "api/v1/offers/": {"GET": Exempt("the public catalog: every active pool is offered to every buyer")},
    "api/v1/quotes/": {
        "POST": Create(
            foreign=(lambda w: {"dataset": str(w.a.dataset.pk), "result_size_gb": "1"},),
            body=lambda w: {"gpu_model": "H100-80G", "cards": 1, "workload": "training", "duration_hours": "1"},
            catalog=True,
        )
    },
    "api/v1/orders/": {
        "GET": Listing(),
        "POST": Create(
            foreign=(
                lambda w: {
                    "gpu_model": "H100-80G",
                    "cards": 1,
                    "workload": "training",
                    "duration_hours": "1",
                    "allowed_hubs": [str(w.a.pool.pk)],
                },
                lambda w: {"dataset": str(w.a.dataset.pk), "result_size_gb": "1"},
            )
        ),
    },
    "api/v1/token-offers/": {"GET": Exempt("the public catalog: every active endpoint is offered to every buyer")},
    "api/v1/token-quotes/": {
        "POST": Create(
            body=lambda w: {
                "model": "deepseek-v3",
                "input_tokens": 1000,
                "output_tokens": 100,
                "workload": "realtime",
                "user_region": "beijing",
                "max_latency_ms": 1000,
            },
            catalog=True,
        )
    },
    "api/v1/token-orders/": {
        "GET": Listing(),
        "POST": Create(
            foreign=(
                lambda w: {
                    "model": "deepseek-v3",
                    "input_tokens": 1000,
                    "output_tokens": 100,
                    "workload": "realtime",
                    "user_region": "beijing",
                    "endpoint": str(w.a.token_order.pk),
                },
            )
        ),
    },
    "api/v1/token-orders/<uuid:token_order_id>/": {"GET": Detail("token_order_id", ("buyer",))},
    "api/v1/orders/<uuid:order_id>/": {"GET": Detail("order_id", ("buyer",))},
    "api/v1/orders/<uuid:order_id>/cancel/": {"POST": Detail("order_id", ("buyer",))},
    "api/v1/leases/": {
        "GET": Listing(queries=(lambda w: {"pool": str(w.a.pool.pk)}, lambda w: {"order": str(w.a.order.pk)}))
    },
    "api/v1/leases/<uuid:lease_id>/": {
        "GET": Detail("lease_id", ("buyer", "provider")),
        "PATCH": Patch("lease_id", "buyer", read=LeaseSerializer, write=LeaseUpdateSerializer),
    },
    "api/v1/leases/<uuid:lease_id>/start/": {"POST": Detail("lease_id", ("provider",))},
    "api/v1/leases/<uuid:lease_id>/deposits/": {
        "POST": Detail("lease_id", ("buyer",), body=lambda w: {"cards": 1, "start_at": _next_hour()})
    },
    "api/v1/leases/<uuid:lease_id>/terminate/": {"POST": Detail("lease_id", ("buyer", "provider"))},
    # Metering and billing.
    "api/v1/usage-events/": {
        "POST": Create(
            foreign=(
                lambda w: [
                    {
                        "specversion": "1.0",
                        "id": f"isolation-{uuid.uuid4()}",
                        "source": "agent://b",
                        "type": "compute.gpu_seconds",
                        "subject": str(w.a.lease.pk),
                        "time": (timezone.now() - timedelta(minutes=5)).isoformat(),
                        "data": {"quantity": 60},
                    }
                ],
            )
        )
    },
    "api/v1/usage/": {
        "GET": Listing(
            queries=(
                lambda w: {"lease": str(w.a.lease.pk), "granularity": "day"},
                lambda w: {"pool": str(w.a.pool.pk), "granularity": "day"},
            )
        )
    },
    "api/v1/invoices/": {"GET": Listing()},
    "api/v1/invoices/<uuid:invoice_id>/": {"GET": Detail("invoice_id", ("buyer",))},
    "api/v1/invoices/<uuid:invoice_id>/pay/": {"POST": Detail("invoice_id", ("buyer",), body=lambda w: {})},
    "api/v1/invoices/<uuid:invoice_id>/void/": {"POST": Detail("invoice_id", (), body=lambda w: REASON)},  # operators
    "api/v1/invoices/<uuid:invoice_id>/bank-transfer/": {
        "POST": Detail("invoice_id", (), body=lambda w: {"amount": "1.00"})  # operators
    },
    "api/v1/statements/": {"GET": Listing()},
    # Fapiao: the buyer's invoicing details (its own, no id), its requests; operators record them.
    "api/v1/invoicing-details/": {
        "GET": Listing(),
        "PUT": Create(body=lambda w: {"title": w.b.buyer.legal_name, "taxpayer_id": w.b.buyer.credit_code}),
    },
    "api/v1/invoices/<uuid:invoice_id>/fapiao/": {
        "GET": Detail("invoice_id", ("buyer",)),
        "POST": Detail("invoice_id", ("buyer",), body=lambda w: {"kind": "ordinary"}),
    },
    "api/v1/fapiao-requests/": {"GET": Listing(queries=(lambda w: {"status": "issued"},))},
    "api/v1/fapiao-requests/<uuid:request_id>/": {"GET": Detail("request_id", ("buyer",))},
    "api/v1/fapiao-requests/<uuid:request_id>/file/": {"GET": Detail("request_id", ("buyer",))},
    "api/v1/fapiao-requests/<uuid:request_id>/issue/": {"POST": Detail("request_id", (), body=lambda w: {})},
    "api/v1/fapiao-requests/<uuid:request_id>/red-letter/": {"POST": Detail("request_id", (), body=lambda w: {})},
    # The compute bank: each buyer's own (no id in its path).
    "api/v1/bank/": {
        "GET": Listing(),
        "PATCH": Patch("bank", "buyer", read=BankSerializer, write=BankSettingsSerializer, singleton=True),
    },
    "api/v1/bank/transactions/": {"GET": Listing()},
    "api/v1/bank/deposits/": {"GET": Listing()},
    "api/v1/bank/deposits/<uuid:deposit_id>/withdraw/": {"POST": Detail("deposit_id", ("buyer",))},
    "api/v1/bank/top-ups/": {"POST": Create(body=lambda w: {"amount": "100.00"})},
    "api/v1/bank/top-ups/<uuid:top_up_id>/": {"GET": Detail("top_up_id", ("buyer",))},
    # Vouchers.
    "api/v1/voucher-programs/": {
        "GET": Listing(),
        "POST": Create(
            foreign=(
                lambda w: {
                    "issuer": str(w.a.issuer.pk),
                    "name": "on a's behalf",
                    "budget": "1000.00",
                    "coverage_share": "0.5",
                    "per_company_yearly_cap": "100.00",
                    "valid_until": _later(),
                },
            )
        ),
    },
    "api/v1/voucher-programs/<uuid:program_id>/": {"GET": Detail("program_id", ("issuer",))},
    "api/v1/voucher-programs/<uuid:program_id>/open/": {"POST": Detail("program_id", ("issuer",))},
    "api/v1/voucher-programs/<uuid:program_id>/close/": {"POST": Detail("program_id", ("issuer",))},
    "api/v1/voucher-programs/<uuid:program_id>/report/": {"GET": Detail("program_id", ("issuer",))},
    "api/v1/voucher-programs/<uuid:program_id>/vouchers/": {
        "POST": Detail(
            "program_id", ("issuer",), body=lambda w: [{"organization": str(w.b.buyer.pk), "face_value": "1.00"}]
        )
    },
    "api/v1/vouchers/": {"GET": Listing(queries=(lambda w: {"program": str(w.a.program.pk)},))},
    "api/v1/vouchers/<uuid:voucher_id>/": {"GET": Detail("voucher_id", ("buyer", "issuer"))},
    "api/v1/vouchers/<uuid:voucher_id>/revoke/": {"POST": Detail("voucher_id", ("issuer",), body=lambda w: REASON)},
}

ROUTES |= {
    # Settlements: payouts and subsidy claims.
    "api/v1/payout-account/": {
        "GET": Listing(),
        "PUT": Create(
            foreign=(
                lambda w: {
                    "account_name": w.a.provider.legal_name,
                    "bank_name": "b",
                    "branch": "b",
                    "account_number": "62220000999988887777",
                },
            )
        ),
    },
    "api/v1/payouts/": {"GET": Listing()},
    "api/v1/payout-runs/": {"GET": Listing(), "POST": Create(body=lambda w: {"period": "2026-03"})},  # operators
    "api/v1/payout-runs/<uuid:run_id>/": {"GET": Detail("run_id", ())},
    "api/v1/payout-runs/<uuid:run_id>/batch.csv": {"GET": Detail("run_id", ())},
    "api/v1/payout-runs/<uuid:run_id>/send/": {"POST": Detail("run_id", ())},
    "api/v1/payout-runs/<uuid:run_id>/return-file/": {
        "POST": Detail("run_id", (), body=lambda w: {"content": "reference,status,reason\n"})
    },
    "api/v1/payout-runs/<uuid:run_id>/lines/<uuid:line_id>/settle/": {
        "POST": Detail("line_id", (), body=lambda w: {"status": "paid"})
    },
    "api/v1/claims/": {"GET": Listing(queries=(lambda w: {"status": "submitted"},))},
    "api/v1/claims/<uuid:claim_id>/": {"GET": Detail("claim_id", ("issuer",))},
    "api/v1/claims/<uuid:claim_id>/evidence.csv": {"GET": Detail("claim_id", ("issuer",))},
    "api/v1/claims/<uuid:claim_id>/review/": {
        "POST": Detail("claim_id", ("issuer",), body=lambda w: {"approve_all": True})
    },
    "api/v1/claims/<uuid:claim_id>/payments/": {
        "POST": Detail("claim_id", (), body=lambda w: {"reference": "x", "amount": "1.00"})  # operators
    },
    # Dashboards: members signed in with a password (session), each only their organization's pages.
    "dashboard/login/": {
        "GET": Exempt("the sign-in form"),
        "POST": Exempt("signing in"),
        "PUT": Exempt("the sign-in form (Django's FormView takes PUT as POST)"),
    },
    "dashboard/logout/": {"POST": Exempt("signing out")},
    "dashboard/": {"GET": Page()},
    "dashboard/language/": {"POST": Exempt("the member's own language: no organization's data")},
    "dashboard/<slug:slug>/": {"GET": Page()},
    "dashboard/<slug:slug>/invoices/<uuid:invoice_id>/": {"GET": Page("invoice_id")},
    "dashboard/<slug:slug>/invoices/<uuid:invoice_id>/pdf/": {"GET": Page("invoice_id")},
    # The buyer's pay button: B's members get 404 on A's invoice, under A's page or their own.
    "dashboard/<slug:slug>/invoices/<uuid:invoice_id>/pay/": {"POST": Page("invoice_id")},
    "dashboard/<slug:slug>/programs/<uuid:program_id>/": {"GET": Page("program_id")},
    "dashboard/<slug:slug>/claims/<uuid:claim_id>/pdf/": {"GET": Page("claim_id")},
    "dashboard/<slug:slug>/claims/<uuid:claim_id>/claim.csv": {"GET": Page("claim_id")},
    "dashboard/<slug:slug>/programs/<uuid:program_id>/report.csv": {"GET": Page("program_id")},
}

EXEMPT_PREFIXES = {"admin/": "the Django admin: staff users, not API keys"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # HEAD is GET without a body; OPTIONS describes, never looks up


def _routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def _methods(callback: Any) -> set[str]:
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:  # a function view: GET as far as we know
        return {"GET"}
    return {m.upper() for m in view_class.http_method_names if hasattr(view_class, m)} - IGNORED_METHODS


def enumerate_routes() -> dict[str, set[str]]:
    return {
        route: _methods(callback)
        for route, callback in _routes()
        if not any(route.startswith(prefix) for prefix in EXEMPT_PREFIXES)
    }


# --- running the checks -----------------------------------------------------------------------


@dataclass
class Run:
    world: World
    requests: int = 0
    checked: list[str] = field(default_factory=list)

    def client(self, kind: str, tenant: str = "b") -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.world.key(kind, tenant)}")
        return client

    def call(self, client: APIClient, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        self.requests += 1
        if method == "GET":
            return client.get(path, query or {})
        return client.generic(
            method, path, json.dumps(body) if body is not None else "", content_type="application/json"
        )


def _params(route: str) -> list[str]:
    return re.findall(r"<uuid:(\w+)>", route)


def _path(route: str, **ids: str) -> str:
    path = "/" + route
    for name, value in ids.items():
        path = path.replace(f"<uuid:{name}>", value)
    return path


def _ids_of(tenant: Tenant) -> dict[str, str]:
    """Every id of the tenant's rows, with what it is (for the failure messages)."""
    ids = {str(obj.pk): name for name, obj in tenant.objects().items()}
    ids[str(tenant.pending_pool.pk)] = "pending pool"  # type: ignore[union-attr]
    ids[str(tenant.draft_invoice.pk)] = "draft invoice"  # type: ignore[union-attr]
    ids |= {str(getattr(tenant, kind).pk): kind for kind in TENANT_KINDS}
    organizations = [tenant.buyer, tenant.provider, tenant.issuer]
    ids |= {
        str(pk): "api key" for pk in ApiKey.objects.filter(organization__in=organizations).values_list("pk", flat=True)
    }
    statements = ProviderStatement.objects.filter(provider=tenant.provider).values_list("pk", flat=True)
    ids |= {str(pk): "statement" for pk in statements}
    return ids


def _foreign_in(content: bytes, foreign: dict[str, str]) -> list[str]:
    text = content.decode()
    return [f"{name} {pk}" for pk, name in foreign.items() if pk in text]


def _object(tenant: Tenant, param: str) -> models.Model:
    if param == "bank":
        return tenant.bank  # type: ignore[return-value]
    return tenant.spare_keys["buyer"] if param == "key_id" else tenant.objects()[param]


def _snapshot(tenant: Tenant) -> dict[str, dict[str, Any]]:
    objects = {**tenant.objects(), "key_id": tenant.spare_keys["buyer"], "bank": tenant.bank}
    return {name: as_dict(obj) for name, obj in objects.items()}


def check_detail(run: Run, route: str, method: str, check: Detail) -> None:
    world = run.world
    body = check.body(world) if check.body else None
    # Other ids in the path (a payout run around its line) are A's own, so that only ``param`` differs.
    route = _path(route, **{name: str(_object(world.a, name).pk) for name in _params(route) if name != check.param})[1:]
    foreign = _path(route, **{check.param: str(_object(world.a, check.param).pk)})
    missing = _path(route, **{check.param: str(uuid.uuid4())})
    for kind in TENANT_KINDS:
        client = run.client(kind)
        answer = run.call(client, method, foreign, body)
        baseline = run.call(client, method, missing, body)
        where = f"{method} {route} with {kind} B's key on A's {check.param}"
        assert answer.status_code in (403, 404), f"{where}: {answer.status_code} {answer.content[:300]!r}"
        assert answer.status_code == baseline.status_code, (
            f"{where}: {answer.status_code}, unknown id: {baseline.status_code}"
        )
        if kind in check.owners:
            assert answer.status_code == 404, f"{where}: {answer.status_code}, expected 404"


def check_listing(run: Run, route: str, method: str, check: Listing) -> None:
    foreign_ids = _ids_of(run.world.a)
    for kind in TENANT_KINDS:
        for query in (None, *(make(run.world) for make in check.queries)):
            answer = run.call(run.client(kind), method, "/" + route, query=query)
            where = f"{method} {route}?{query or ''} with {kind} B's key"
            assert answer.status_code in (200, 400, 403), f"{where}: {answer.status_code} {answer.content[:300]!r}"
            seen = _foreign_in(answer.content, foreign_ids)
            assert not seen, f"{where} shows tenant A's {seen}"


def check_create(run: Run, route: str, method: str, check: Create) -> None:
    foreign_ids = _ids_of(run.world.a)
    if check.catalog:
        foreign_ids.pop(str(run.world.a.pool.pk))  # type: ignore[union-attr]
        foreign_ids.pop(str(run.world.a.endpoint.pk))  # type: ignore[union-attr]
    for kind in TENANT_KINDS:
        client = run.client(kind)
        for make in check.foreign:
            answer = run.call(client, method, "/" + route, make(run.world))
            where = f"{method} {route} with {kind} B's key naming A's objects"
            if route == "api/v1/usage-events/" and answer.status_code == 200:
                result = answer.json()  # events are checked one by one: a foreign lease is that event's rejection
                assert (result["accepted"], result["rejected"]) == (0, 1), f"{where}: {result}"
            else:
                assert answer.status_code in (400, 403, 404, 422), (
                    f"{where}: {answer.status_code} {answer.content[:300]!r}"
                )
        if check.body:
            answer = run.call(client, method, "/" + route, check.body(run.world))
            seen = _foreign_in(answer.content, foreign_ids)
            assert not seen, f"{method} {route} with {kind} B's key answers with tenant A's {seen}"


def check_patch(run: Run, route: str, method: str, check: Patch) -> None:
    world = run.world
    obj = _object(world.a, check.param)
    path = "/" + route if check.singleton else _path(route, **{check.param: str(obj.pk)})
    owner = run.client(check.owner, "a")
    writable = {name for name, f in check.write().fields.items() if not f.read_only}
    protected = sorted(set(check.read().fields) - writable)
    writable_one = sorted(writable)[0]
    assert protected, f"{route}: nothing to protect?"
    before = as_dict(obj)
    for name in protected:
        answer = run.call(owner, method, path, {name: "changed by patch"})
        assert answer.status_code == 400, f"{method} {route} setting {name}: {answer.status_code}"
        answer = run.call(owner, method, path, {writable_one: None, name: 0})
        assert answer.status_code == 400, f"{method} {route} setting {name} beside a writable field"
    assert as_dict(obj) == before, f"{method} {route} changed fields outside {check.write.__name__}"
    # B's key of the same kind cannot PATCH it either (or, for its own singleton, changes only its own).
    answer = run.call(run.client(check.owner), method, path, {})
    assert answer.status_code == (200 if check.singleton else 404), f"{method} {route} with B's key"
    assert as_dict(obj) == before


def check_page(run: Run, route: str, method: str, check: Page) -> None:
    world = run.world
    foreign_ids = _ids_of(world.a)
    for kind in TENANT_KINDS:
        member = Client()
        member.force_login(world.b.members[kind])
        own, theirs = getattr(world.b, kind).slug, getattr(world.a, kind).slug
        ids = {check.param: str(_object(world.a, check.param).pk)} if check.param else {}
        missing = {check.param: str(uuid.uuid4())} if check.param else {}
        for slug in (theirs, own) if "<slug:slug>" in route else (None,):
            path = _path(route.replace("<slug:slug>", slug or ""), **ids)
            # What an id or an organization that does not exist answers: the same as A's must.
            unknown = route.replace("<slug:slug>", own if check.param else "no-such-organization")
            answer, baseline = member.generic(method, path), member.generic(method, _path(unknown, **missing))
            run.requests += 2
            where = f"{method} {path} as {kind} B's member"
            if slug == own and not check.param:
                assert answer.status_code in (200, 404), f"{where}: {answer.status_code}"  # its own page
            elif slug is not None:
                assert answer.status_code == 404, f"{where}: {answer.status_code}"
                assert baseline.status_code == 404, f"{where}: unknown id {baseline.status_code}"
            body = b"".join(answer.streaming_content) if answer.streaming else answer.content  # type: ignore[attr-defined]
            seen = _foreign_in(body.replace(theirs.encode(), b""), foreign_ids)
            assert not seen, f"{where} shows tenant A's {seen}"
            assert answer.status_code == 404 or theirs.encode() not in body, f"{where} names A's organization"


def check_public(run: Run, route: str, method: str, check: Public) -> None:
    answers = [
        run.call(run.client(kind, tenant), method, "/" + route) for kind in TENANT_KINDS for tenant in ("a", "b")
    ]
    assert all(answer.status_code == 200 for answer in answers), f"{method} {route}: {[a.status_code for a in answers]}"
    assert len({answer.content for answer in answers}) == 1, f"{method} {route} differs between keys"


RUNNERS = {
    Public: check_public,
    Detail: check_detail,
    Listing: check_listing,
    Create: check_create,
    Patch: check_patch,
    Page: check_page,
}


def test_every_route_and_method_has_an_isolation_check() -> None:
    routes = enumerate_routes()
    missing = sorted(f"{m} {r}" for r, methods in routes.items() for m in methods if m not in ROUTES.get(r, {}))
    stale = sorted(f"{m} {r}" for r, methods in ROUTES.items() for m in methods if m not in routes.get(r, set()))

    assert not missing, f"Routes without a tenant isolation check in ROUTES: {missing}"
    assert not stale, f"ROUTES lists routes that no longer exist: {stale}"


@pytest.mark.django_db
def test_a_second_tenant_never_reaches_the_first_tenants_objects(world: World) -> None:
    started = time.monotonic()
    run = Run(world)
    before = _snapshot(world.a)
    for route, methods in ROUTES.items():
        for method, check in methods.items():
            if isinstance(check, Exempt):
                continue
            RUNNERS[type(check)](run, route, method, check)  # type: ignore[operator]
            run.checked.append(f"{method} {route}")

    assert _snapshot(world.a) == before, "a request of tenant B changed tenant A's rows"
    routes = enumerate_routes()
    write_figures(
        "isolation-figures.json",
        {
            "routes": len(routes),
            "route_methods": sum(len(m) for m in routes.values()),
            "checked_route_methods": len(run.checked),
            "exempt_route_methods": sorted(
                f"{m} {r}" for r, ms in ROUTES.items() for m, c in ms.items() if isinstance(c, Exempt)
            ),
            "exempt_prefixes": sorted(EXEMPT_PREFIXES),
            "requests": run.requests,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
