"""Reads of the marketplace: the compute supermarket's offers."""

from datetime import datetime

from django.db.models import DecimalField, IntegerField, JSONField, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast

from pools.models import PricePlan, ResourcePool
from pools.selectors import fresh_after
from pools.tariffs import local_hour


def offers_list(*, now: datetime, user_region: str | None = None) -> QuerySet[ResourcePool]:
    """Active, fresh pools with free cards, each annotated with its price now.

    ``price_now`` is the price per card-hour of the local hour ``now`` falls in,
    under the price version in force at ``now``; ``latency_ms`` the hub's round
    trip to ``user_region``. One SQL query; filtering and ordering happen in the
    database on ``pool_offer_idx`` and ``price_plan_lookup_idx``.
    """
    plan_in_force = PricePlan.objects.filter(pool=OuterRef("pk"), effective_from__lte=now).order_by("-effective_from")
    hour = local_hour(now)
    offers = (
        ResourcePool.objects.filter(
            status=ResourcePool.Status.ACTIVE, last_heartbeat_at__gte=fresh_after(now), free_cards__gt=0
        )
        .select_related("provider", "hub", "gpu_model")
        .annotate(
            price_now=Subquery(
                plan_in_force.annotate(
                    rate=Cast(KT(f"hour_prices__{hour}"), DecimalField(max_digits=22, decimal_places=10))
                ).values("rate")[:1]
            ),
            hour_prices_now=Subquery(plan_in_force.values("hour_prices")[:1], output_field=JSONField()),
            token_prices_now=Subquery(plan_in_force.values("token_prices")[:1], output_field=JSONField()),
        )
        .filter(price_now__isnull=False)
    )
    if user_region:
        offers = offers.annotate(latency_ms=Cast(KeyTextTransform(user_region, "hub__latency_ms"), IntegerField()))
    return offers
