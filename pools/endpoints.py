"""Model endpoints: a provider serves a model by the token on cards it dedicates from a pool.

Every write to endpoints. The lifecycle is a pool's (pending, active, suspended,
retired; operators approve and suspend, the provider retires). While an endpoint
is active its cards are reserved on the pool, so card leases cannot take them:
the same card-hour is never sold twice. Its prices are the pool's price versions
(``PricePlan.token_prices[model]``): registering or repricing an endpoint makes a
new version of the pool's prices through ``price_plan_create``, the one versioning
that rating reads.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError, ConflictError, RuleViolation
from organizations.models import Organization
from organizations.services import audit_record
from pools import hooks
from pools.models import ModelEndpoint, PricePlan, ResourcePool
from pools.reference_data import TOKENS_PER_SECOND
from pools.services import invalidate_offer_snapshot, pools_lock, price_plan_create

Status = ModelEndpoint.Status


def _latest_plan(pool: ResourcePool) -> PricePlan:
    plan = pool.price_plans.order_by("-version").first()
    assert plan is not None, "every pool is registered with a first price plan"
    return plan


@transaction.atomic
def endpoint_reprice(
    *,
    endpoint: ModelEndpoint,
    input_price: Decimal,
    output_price: Decimal,
    by: str,
    effective_from: datetime | None = None,
) -> PricePlan:
    """New prices per million tokens for the endpoint's model: a new version of its pool's prices,
    from ``effective_from`` (now by default, never in the past), the other models' prices carried over."""
    pools_lock([endpoint.pool_id])  # before reading the latest version: two models' reprices take turns
    prices = dict(_latest_plan(endpoint.pool).token_prices)
    prices[endpoint.model] = {"input": input_price, "output": output_price}
    return price_plan_create(pool=endpoint.pool, by=by, token_prices=prices, effective_from=effective_from)


def _first_prices(*, endpoint: ModelEndpoint, input_price: Decimal, output_price: Decimal, by: str) -> None:
    """A new endpoint's prices: a version of its pool's prices from now, or just after the pool's
    latest version if that one starts now or later (nothing is sold on a pending endpoint)."""
    latest = _latest_plan(endpoint.pool)
    if latest.token_prices.get(endpoint.model) == {"input": str(input_price), "output": str(output_price)}:
        return
    start = max(timezone.now(), latest.effective_from + timedelta(microseconds=1))
    endpoint_reprice(endpoint=endpoint, input_price=input_price, output_price=output_price, by=by, effective_from=start)


@transaction.atomic
def endpoint_register(
    *,
    provider: Organization,
    pool: ResourcePool,
    model: str,
    input_price: Decimal,
    output_price: Decimal,
    throughput_per_card: int,
    cards: int,
    by: str,
) -> ModelEndpoint:
    """A provider publishes a model on one of its pools; it waits for an operator as ``pending``."""
    if provider.kind != Organization.Kind.PROVIDER or pool.provider_id != provider.pk:
        raise RuleViolation(gettext("Only the pool's provider can publish an endpoint on it."), code="not_a_provider")
    (locked,) = pools_lock([pool.pk])
    if locked.status == ResourcePool.Status.RETIRED:
        raise ConflictError(gettext("This pool is retired."), code="pool_retired")
    if cards > locked.cards:
        raise ApplicationError(
            gettext("The pool has %(cards)s cards; an endpoint cannot dedicate %(cards2)s.")
            % {"cards": locked.cards, "cards2": cards},
            code="too_many_cards",
            fields={"cards": [{"code": "max_value", "message": f"At most {locked.cards}."}]},
        )
    ceiling = TOKENS_PER_SECOND.get(locked.gpu_model_id)
    if ceiling is not None and throughput_per_card > ceiling:
        raise ApplicationError(
            gettext(
                "No %(gpu_model_id)s card processes more than %(ceiling)s tokens per second "
                "(docs/reference-data.md); give the throughput the endpoint sustains."
            )
            % {"gpu_model_id": locked.gpu_model_id, "ceiling": f"{ceiling:,}"},
            code="throughput_implausible",
            fields={"throughput_per_card": [{"code": "max_value", "message": f"At most {ceiling}."}]},
        )
    if ModelEndpoint.objects.filter(pool=locked, model=model).exclude(status=Status.RETIRED).exists():
        raise ConflictError(
            gettext("This pool already serves %(model)s; change that endpoint's prices instead.") % {"model": model},
            code="endpoint_exists",
        )
    endpoint = ModelEndpoint.objects.create(
        pool=locked,
        model=model,
        throughput_per_card=throughput_per_card,
        cards=cards,
        status_changed_by=by,
    )
    _first_prices(endpoint=endpoint, input_price=input_price, output_price=output_price, by=by)
    return endpoint


def _transition(
    *, endpoint: ModelEndpoint, to: str, allowed_from: Iterable[str], by: str, reason: str, action: str
) -> ModelEndpoint:
    """Move an endpoint's status under its pool's lock (then its own), reserving its cards on
    the pool when it becomes active and giving them back, once, when it stops being active: the
    status hooks have settled its token orders by then (the marketplace's), so no card is both an
    endpoint's and free for card leases."""
    (pool,) = pools_lock([endpoint.pool_id])
    locked = ModelEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if locked.status not in allowed_from:
        raise ConflictError(
            gettext("A %(status)s endpoint cannot become %(to)s; only one that is %(join)s can.")
            % {"status": locked.status, "to": to, "join": " or ".join(sorted(allowed_from))},
            code="invalid_transition",
        )
    for hook in hooks.ENDPOINT_STATUS_HOOKS:
        hook(locked, to, by)
    if to == Status.ACTIVE:
        if pool.status != ResourcePool.Status.ACTIVE:
            raise ConflictError(
                gettext("Its pool is %(status)s; approve the pool first.") % {"status": pool.status},
                code="pool_not_active",
            )
        if pool.cards - pool.reserved_cards < locked.cards:
            raise ConflictError(
                gettext(
                    "The pool has %(value)s cards not held by leases or endpoints, fewer than the endpoint's %(cards)s."
                )
                % {"value": pool.cards - pool.reserved_cards, "cards": locked.cards},
                code="no_capacity",
            )
        invalidate_offer_snapshot(pool.pk, reserved_cards=F("reserved_cards") + locked.cards)
    elif locked.status == Status.ACTIVE:
        invalidate_offer_snapshot(pool.pk, reserved_cards=F("reserved_cards") - locked.cards)
    previous = locked.status
    locked.status, locked.status_changed_at, locked.status_changed_by = to, timezone.now(), by
    locked.save(update_fields=["status", "status_changed_at", "status_changed_by"])
    audit_record(
        actor=by,
        action=action,
        target=locked,
        organization=pool.provider,
        summary={"from_status": previous, "to_status": to, "reason": reason, "model": locked.model},
    )
    return locked


@transaction.atomic
def endpoint_approve(*, endpoint: ModelEndpoint, by: str, reason: str = "") -> ModelEndpoint:
    """An operator admits a pending endpoint, or lifts a suspension: its cards are reserved."""
    return _transition(
        endpoint=endpoint,
        to=Status.ACTIVE,
        allowed_from={Status.PENDING, Status.SUSPENDED},
        by=by,
        reason=reason,
        action="endpoint.approve",
    )


@transaction.atomic
def endpoint_suspend(*, endpoint: ModelEndpoint, by: str, reason: str = "") -> ModelEndpoint:
    """An operator takes an endpoint out of the market: its open token orders end now (usage up to
    now is billed, later usage refused), then its cards go back to the pool."""
    return _transition(
        endpoint=endpoint,
        to=Status.SUSPENDED,
        allowed_from={Status.PENDING, Status.ACTIVE},
        by=by,
        reason=reason,
        action="endpoint.suspend",
    )


@transaction.atomic
def endpoint_retire(*, endpoint: ModelEndpoint, by: str, reason: str = "") -> ModelEndpoint:
    """The provider withdraws an endpoint for good; its cards go back to the pool. Refused
    (``endpoint_in_use``) while token orders on it are placed or running: they end first."""
    return _transition(
        endpoint=endpoint,
        to=Status.RETIRED,
        allowed_from={Status.PENDING, Status.ACTIVE, Status.SUSPENDED},
        by=by,
        reason=reason,
        action="endpoint.retire",
    )
