from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from core.rows import Rows
from organizations.models import Organization
from pools.models import Heartbeat, Hub, ModelEndpoint, PricePlan, ResourcePool
from pools.reference_data import HUBS


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


def endpoint_list(*, organization: Organization) -> QuerySet[ModelEndpoint]:
    """Providers see their own model endpoints; operators see every endpoint."""
    rows = ModelEndpoint.objects.select_related("pool__hub", "pool__provider")
    if organization.kind == Organization.Kind.OPERATOR:
        return rows
    return rows.filter(pool__provider=organization)


def price_plan_at(*, pool_id: UUID, at: datetime) -> PricePlan | None:
    """The price plan version in force at ``at``: usage is always rated with it."""
    return PricePlan.objects.filter(pool_id=pool_id, effective_from__lte=at).order_by("-effective_from").first()


def price_plans_in_force(*, pool_ids: list[UUID], at: datetime) -> dict[UUID, PricePlan]:
    """The version in force at ``at`` for each of many pools, in one query."""
    in_force = (
        PricePlan.objects.filter(pool_id__in=pool_ids, effective_from__lte=at)
        .order_by("pool_id", "-effective_from")
        .distinct("pool_id")  # DISTINCT ON: the latest of each pool, not its whole history
    )
    return {plan.pool_id: plan for plan in in_force}


_VERSION_ROWS = Rows(PricePlan, ["id", "pool", "version", "effective_from"])
_VERSIONS_IN_FORCE_SQL = f"""
SELECT DISTINCT ON (pool_id) {_VERSION_ROWS.columns} FROM {PricePlan._meta.db_table}
WHERE pool_id = ANY(%s) AND effective_from <= %s
ORDER BY pool_id, effective_from DESC
"""  # noqa: S608  # the table's name and columns, not input


def price_plan_versions_in_force(*, pool_ids: list[UUID], at: datetime) -> dict[UUID, PricePlan]:
    """The version in force at ``at`` for each of many pools, as ``price_plans_in_force`` finds it,
    with only its id, pool, version and start read (any other field loads on first use, a query
    each): what a lease placed on it refers to. Plain SQL: it runs under the pools' locks for
    every order, where compiling the query cost more than running it."""
    return {plan.pool_id: plan for plan in _VERSION_ROWS.fetch(_VERSIONS_IN_FORCE_SQL, [list(pool_ids), at])}


Versions = list[tuple[datetime, int, Any]]  # a pool's (running from, version, id), by running_from


def plans_by_pool(*, pool_ids: Iterable[Any], until: datetime) -> dict[Any, Versions]:
    """Each pool's price versions that reach running leases before ``until`` as (running from,
    version, id), earliest first; and its first version in any case (see ``plan_in_force``)."""
    plans: dict[Any, Versions] = defaultdict(list)
    for pool_id, running_from, version, plan_id in (
        PricePlan.objects.filter(Q(running_from__lt=until) | Q(version=1), pool_id__in=pool_ids)
        .order_by("pool_id", "running_from", "version")
        .values_list("pool_id", "running_from", "version", "pk")
    ):
        plans[pool_id].append((running_from, version, plan_id))
    return plans


def plan_in_force(versions: Versions, at: datetime) -> Any:
    """The id of the version a running lease pays at ``at`` outside its price lock: the newest of
    those that reached running leases by then (a decrease made while a rise waits for its notice
    supersedes the rise at once).

    Usage stamped before a pool's first version (an agent's clock behind, within the grace
    ingest allows before a lease's start) is rated at that first version: nothing ran before
    the pool was listed, and usage is never left without a price.
    """
    reached = [version for version in versions if version[0] <= at]
    if not reached:
        return versions[0][2] if versions else None
    return max(reached, key=lambda version: version[1])[2]


def hub_capacity() -> list[dict[str, Any]]:
    """Each hub's active pools: their cards, healthy, reserved and free cards, and utilization
    (reserved over all cards), the sums of what ``GET pools/?hub=&status=active`` lists."""
    totals: dict[str, dict[str, Any]] = {
        row["hub_id"]: dict(row)
        for row in ResourcePool.objects.filter(status=ResourcePool.Status.ACTIVE)
        .values("hub_id")
        .annotate(
            pools=Count("pk"),
            cards=Sum("cards"),
            healthy_cards=Sum("healthy_cards"),
            reserved_cards=Sum("reserved_cards"),
            free_cards=Sum("free_cards"),
        )
        .order_by()
    }
    order = {hub["code"]: index for index, hub in enumerate(HUBS)}
    hubs = []
    for hub in sorted(Hub.objects.all(), key=lambda hub: (hub.region, order.get(hub.code, len(order)), hub.code)):
        row = totals.get(hub.code, {})
        cards = row.get("cards") or 0
        hubs.append(
            {
                "code": hub.code,
                "name": hub.local_name,
                "region": hub.region,
                "pools": row.get("pools", 0),
                "cards": cards,
                "healthy_cards": row.get("healthy_cards") or 0,
                "reserved_cards": row.get("reserved_cards") or 0,
                "free_cards": row.get("free_cards") or 0,
                "utilization": utilization(row.get("reserved_cards") or 0, cards),
            }
        )
    return hubs


def utilization(used: Decimal | int, capacity: Decimal | int) -> Decimal:
    """A share from 0 to 1, four places: the one way pages and reports round utilization."""
    if not capacity:
        return Decimal(0)
    return (Decimal(used) / Decimal(capacity)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _stale(now: datetime | None) -> Q:
    """No heartbeat yet, or none fresh (the API's ``stale``)."""
    return Q(last_heartbeat_at__isnull=True) | Q(last_heartbeat_at__lt=fresh_after(now))


def pools_needing_attention(*, organization: Organization, now: datetime | None = None) -> QuerySet[ResourcePool]:
    """Suspended pools, and active ones whose heartbeats went stale (the API's ``stale``)."""
    return pool_list(organization=organization).filter(
        Q(status=ResourcePool.Status.SUSPENDED) | Q(_stale(now), status=ResourcePool.Status.ACTIVE)
    )


def pools_by_health(*, now: datetime | None = None) -> dict[str, int]:
    """How many pools are in each status, active ones split into ``active`` (fresh heartbeats) and ``stale``."""
    status = ResourcePool.Status
    stale = _stale(now)
    return ResourcePool.objects.aggregate(
        pending=Count("pk", filter=Q(status=status.PENDING)),
        active=Count("pk", filter=Q(status=status.ACTIVE) & ~stale),
        stale=Count("pk", filter=Q(stale, status=status.ACTIVE)),
        suspended=Count("pk", filter=Q(status=status.SUSPENDED)),
        retired=Count("pk", filter=Q(status=status.RETIRED)),
    )


def pools_awaiting_approval(*, organization: Organization) -> QuerySet[ResourcePool]:
    """Pools registered and not yet approved (``GET pools/?status=pending``), oldest first."""
    return pool_list(organization=organization).filter(status=ResourcePool.Status.PENDING).order_by("created_at", "pk")


def heartbeats_by_hour(*, pool_ids: list[UUID], since: datetime) -> dict[UUID, list[tuple[datetime, int, int]]]:
    """Each pool's heartbeats observed since ``since``, by UTC hour: (hour, the fewest healthy
    cards reported in it, how many heartbeats came), oldest first. An agent reports every
    minute or so: a day of them is summed up in the database, not sent to a page."""
    series: dict[UUID, list[tuple[datetime, int, int]]] = {pool_id: [] for pool_id in pool_ids}
    rows = (
        Heartbeat.objects.filter(pool_id__in=pool_ids, observed_at__gte=since)
        .values("pool_id", hour=TruncHour("observed_at"))
        .annotate(fewest=Min("healthy_cards"), beats=Count("pk"))
        .order_by("pool_id", "hour")
    )
    for row in rows:
        series[row["pool_id"]].append((row["hour"], row["fewest"], row["beats"]))
    return series
