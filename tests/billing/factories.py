"""Billing test helpers: usage in given hours, straight into rollups."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.models import UsageMetric, UsageRollup
from billing.services.usage import plan_in_force, plans_by_pool, usage_rollups_store
from marketplace.models import Lease


def usage(
    lease: Lease, hour: datetime, *, seconds: Any = 3600, metric: str = UsageMetric.GPU_SECONDS, model: str = ""
) -> None:
    """The rollup task's work for a bucket whose events sum to ``seconds`` (or tokens): ``lease``
    in the UTC hour starting at ``hour``, stored as the rollup task stores it."""
    versions = plans_by_pool(pool_ids=[lease.pool_id], until=hour.replace(year=hour.year + 1)).get(lease.pool_id, [])
    usage_rollups_store(
        rows=[
            UsageRollup(
                lease=lease,
                metric=metric,
                model=model,
                hour=hour,
                pool_id=lease.pool_id,
                buyer_id=lease.buyer_id,
                provider_id=lease.provider_id,
                quantity=Decimal(seconds),
                events=1,
                price_plan_id=plan_in_force(versions, hour),
            )
        ]
    )


def leased(*, buyer: Any, provider: Any, at: datetime, price: Decimal = Decimal("20"), **pool: Any) -> Lease:
    """A lease of 8 cards on a new pool of ``provider`` (Beijing hub unless told), placed at ``at``."""
    import time_machine

    from marketplace.dispatch import Requirements
    from marketplace.services import order_place
    from tests.factories import pool_factory

    with time_machine.travel(at, tick=False):
        fields = {"hub_id": "jingjinji", "province": "Beijing", "price_per_card_hour": price, **pool}
        created = pool_factory(provider=provider, cards=100, **fields)
        order = order_place(
            buyer=buyer,
            requirements=Requirements(
                cards=8,
                duration_hours=24,
                workload="training",
                gpu_model=created.gpu_model_id,
                allowed_hubs=frozenset({created.hub_id}),
            ),
        )
    return order.leases.get()
