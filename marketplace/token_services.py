"""Every write of the token market: token quotes and token orders.

A token order is an ``Order`` on a model endpoint with one ``Lease`` whose id is
the order's: usage arrives as ``compute.tokens`` CloudEvents whose ``subject`` is
the token order's id, and runs the card leases' path (metering, rollups, rating
per million tokens with the pool's price version, invoices, vouchers, the bank).
That lease holds no cards of its own (the endpoint's are reserved on its pool
while it is active) and bills tokens only; a card lease bills card-seconds only.
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError, ConflictError, NotFoundError, RuleViolation
from marketplace.models import Lease, Order
from marketplace.services import ESTIMATE_PLACES, lease_end, lease_start
from marketplace.token_dispatch import BATCH, TokenDispatchResult, TokenRequest, token_dispatch
from marketplace.token_selectors import WORKLOADS, endpoint_snapshots
from organizations.models import Organization
from pools.models import ModelEndpoint, PricePlan
from pools.selectors import price_plans_in_force

# A pay-as-you-go token account stays open this long unless the buyer ends it.
TOKEN_ACCOUNT_DAYS = 365


def token_quote(
    *, request: TokenRequest, endpoint_id: object = None, now: datetime | None = None
) -> TokenDispatchResult:
    """The token dispatcher's ranking; nothing is reserved. With a chosen endpoint, that one alone."""
    now = now or timezone.now()
    if request.workload == BATCH and request.deadline is not None and request.deadline <= now:
        raise ApplicationError(
            gettext("The deadline has passed; give one in the future."),
            code="deadline_too_soon",
            fields={"deadline": [{"code": "deadline_too_soon", "message": "In the past."}]},
        )
    endpoints = endpoint_snapshots(now=now, model=request.model)
    if endpoint_id is not None:
        endpoints = [endpoint for endpoint in endpoints if endpoint.id == endpoint_id]
        if not endpoints:
            raise NotFoundError(
                gettext("No active endpoint with this id serves %(model)s.") % {"model": request.model},
                code="endpoint_not_offered",
                fields={"endpoint": [{"code": "not_offered", "message": "Not offered."}]},
            )
    return token_dispatch(request, endpoints, now)


@transaction.atomic
def token_order_place(
    *, buyer: Organization, request: TokenRequest, endpoint_id: object = None, by: str, now: datetime | None = None
) -> Order:
    """Open a token account (real-time: pay as you go, from now) or a batch job (from the
    dispatcher's start to its deadline) on the best endpoint, or the chosen one."""
    now = now or timezone.now()
    if buyer.orders_blocked_reason:
        raise RuleViolation(buyer.orders_blocked_reason, code="orders_blocked")
    result = token_quote(request=request, endpoint_id=endpoint_id, now=now)
    if not result.placements:
        raise RuleViolation(
            gettext("No endpoint can take this token order now: %(summary_text)s.")
            % {"summary_text": result.summary_text(request)},
            code="endpoint_rejected" if endpoint_id is not None else "no_capacity",
            details={"reasons": result.summary(request)},
        )
    placement = result.placements[0]
    # Locked, and active still: an operator's suspension or a retirement waits for this order, or
    # this order sees it (``endpoint_token_orders_settle`` then ends or counts it).
    endpoint = (
        ModelEndpoint.objects.select_for_update(of=("self",)).select_related("pool").get(pk=placement.endpoint_id)
    )
    if endpoint.status != ModelEndpoint.Status.ACTIVE:
        raise ConflictError(
            gettext("This endpoint was just %(status)s; ask for a new quote.") % {"status": endpoint.status},
            code="endpoint_not_active",
        )
    batch = request.workload == BATCH and request.deadline is not None
    start_at = placement.start_at if batch else now
    end_at = request.deadline if batch and request.deadline else now + timedelta(days=TOKEN_ACCOUNT_DAYS)
    estimate = Decimal(str(placement.estimated_cost)).quantize(ESTIMATE_PLACES)
    order = Order.objects.create(
        buyer=buyer,
        cards=endpoint.cards,
        workload=WORKLOADS[request.workload],
        user_region=request.user_region or "",
        max_latency_ms=request.max_latency_ms,
        duration_hours=Decimal((end_at - start_at).total_seconds() / 3600).quantize(Decimal("0.01")),
        deadline=request.deadline if batch else None,
        pool=endpoint.pool,
        endpoint=endpoint,
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        estimated_cost=estimate,
    )
    plan = price_plans_in_force(pool_ids=[endpoint.pool_id], at=now)[endpoint.pool_id]
    Lease.objects.create(
        id=order.pk,
        order=order,
        buyer=buyer,
        provider_id=endpoint.pool.provider_id,
        pool=endpoint.pool,
        endpoint=endpoint,
        cards=endpoint.cards,
        workload=order.workload,
        start_at=start_at,
        end_at=end_at,
        price_locked_until=end_at if batch else _account_lock_end(plan, start_at, end_at),
        estimated_cost=estimate,
        price_plan=plan,
    )
    if start_at <= now:
        lease_start(lease_id=order.pk, by=by, now=now)
    return order


def endpoint_token_orders_settle(endpoint: ModelEndpoint, to: str, by: str) -> None:
    """An endpoint's open token orders when its status changes (``pools.hooks.ENDPOINT_STATUS_HOOKS``,
    its pool and itself locked, before its cards go back to the pool). Its provider cannot retire it
    while they are placed or running (``endpoint_in_use``): the buyers paid for a run. An operator's
    suspension ends them now: a running one as failed, one not started as cancelled, both
    ``endpoint_suspended``; usage up to now is billed, later usage is refused."""
    open_leases = Lease.objects.filter(endpoint_id=endpoint.pk, status__in=Lease.ACTIVE).order_by("pk")
    if to == ModelEndpoint.Status.RETIRED:
        orders = [str(pk) for pk in open_leases.values_list("order_id", flat=True)]
        if orders:
            raise ConflictError(
                gettext(
                    "%(len)s token orders on this endpoint are placed or running; retire it after "
                    "they end (their buyers end them, or you terminate them with POST "
                    "/api/v1/leases/{id}/terminate/), or ask an operator to suspend it."
                )
                % {"len": len(orders)},
                code="endpoint_in_use",
                details={"orders": orders},
            )
    elif to == ModelEndpoint.Status.SUSPENDED:
        now = timezone.now()
        # Locked first: one a buyer ends meanwhile is ended by one of us, never twice.
        for lease_id, status in open_leases.select_for_update(of=("self",)).values_list("pk", "status"):
            ended = Lease.Status.FAILED if status == Lease.Status.RUNNING else Lease.Status.CANCELLED
            lease_end(lease_id=lease_id, status=ended, reason="endpoint_suspended", by=by, now=now)


def _account_lock_end(plan: PricePlan, start_at: datetime, end_at: datetime) -> datetime:
    """A pay-as-you-go token account is no booking (it stays open a year unless ended): it keeps the
    version it opened on only until that version would reach running leases anyway (its opening, or
    the end of the notice of the rise it was opened on); from then it pays what running leases pay."""
    return min(end_at, max(start_at, plan.running_from or start_at))
