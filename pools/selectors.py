from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from organizations.models import Organization
from pools.models import PricePlan, ResourcePool


def fresh_after(now: datetime | None = None) -> datetime:
    """Heartbeats at or after this time are fresh."""
    return (now or timezone.now()) - timedelta(seconds=settings.POOL_HEARTBEAT_STALE_SECONDS)


def pool_is_stale(pool: ResourcePool, now: datetime | None = None) -> bool:
    return pool.last_heartbeat_at is None or pool.last_heartbeat_at < fresh_after(now)


def pool_list(*, organization: Organization) -> QuerySet[ResourcePool]:
    """Providers see their own pools; operators see every pool."""
    pools = ResourcePool.objects.select_related("provider", "hub", "gpu_model")
    if organization.kind == Organization.Kind.OPERATOR:
        return pools
    return pools.filter(provider=organization)


def price_plan_at(*, pool_id: UUID, at: datetime) -> PricePlan | None:
    """The price plan version in force at ``at``: usage is always rated with it."""
    return PricePlan.objects.filter(pool_id=pool_id, effective_from__lte=at).order_by("-effective_from").first()


def price_plan_current_and_next(*, pool_id: UUID, now: datetime) -> tuple[PricePlan | None, PricePlan | None]:
    current = price_plan_at(pool_id=pool_id, at=now)
    upcoming = PricePlan.objects.filter(pool_id=pool_id, effective_from__gt=now).order_by("effective_from").first()
    return current, upcoming


def price_plans_in_force(*, pool_ids: list[UUID], at: datetime) -> dict[UUID, PricePlan]:
    """The version in force at ``at`` for each of many pools, in one query."""
    plans: dict[UUID, PricePlan] = {}
    for plan in PricePlan.objects.filter(pool_id__in=pool_ids, effective_from__lte=at).order_by(
        "pool_id", "-effective_from"
    ):
        plans.setdefault(plan.pool_id, plan)
    return plans
