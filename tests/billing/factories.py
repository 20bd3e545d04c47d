"""Billing test helpers: usage in given hours, straight into rollups."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.models import UsageMetric, UsageRollup
from billing.services.usage import lease_plan_at, plans_by_pool, usage_rollups_store
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
                price_plan_id=lease_plan_at((lease.price_plan_id, lease.price_locked_until), versions, hour),
            )
        ]
    )


def leased(
    *, buyer: Any, provider: Any, at: datetime, price: Decimal = Decimal("20"), hours: float = 24, **pool: Any
) -> Lease:
    """A lease of 8 cards for ``hours`` on a new pool of ``provider`` (Beijing hub unless told), placed
    at ``at`` to start then."""
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
                duration_hours=hours,
                workload="training",
                gpu_model=created.gpu_model_id,
                allowed_hubs=frozenset({created.hub_id}),
            ),
        )
    return order.leases.get()


def credit(buyer: Any, fen: int, *, source: str = "promotion", at: datetime | None = None, **fields: Any) -> Any:
    """A grant of ``fen`` to ``buyer`` through the services (ledger entry and movement included);
    a ``top_up`` as if Stripe had confirmed a top-up's PaymentIntent."""
    from uuid import uuid4

    from billing.models import TopUp
    from billing.services.bank.grants import grant_create
    from billing.services.bank.top_ups import top_up_succeeded

    if source != "top_up":
        return grant_create(buyer=buyer, source=source, amount=fen, by="test", now=at, **fields)
    top_up = TopUp.objects.create(buyer=buyer, amount=fen, payment_intent_id=f"pi_test_{uuid4().hex}")
    top_up_succeeded(top_up_id=top_up.pk, amount=fen, currency="CNY", now=at)
    top_up.refresh_from_db()
    return top_up.grant


def prepaid(buyer: Any) -> Any:
    """Make ``buyer`` pay from its bank: its leases hold credit as they run."""
    from billing.models import Bank
    from billing.services.bank.grants import bank_of

    bank = bank_of(buyer)
    Bank.objects.filter(pk=bank.pk).update(mode=Bank.Mode.PREPAID)
    return buyer
