from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_start, order_place
from tests.factories import pool_factory


def running_lease(*, buyer: Any, provider: Any, cards: int = 8, started_hours_ago: float = 3) -> Lease:
    """A lease of ``cards`` on a pool of ``provider``, booked and running since some hours."""
    now = timezone.now()
    started = now - timedelta(hours=started_hours_ago)
    with time_machine.travel(started, tick=False):  # priced and booked when it started; its heartbeat is fresh
        pool = pool_factory(provider=provider, cards=max(cards, 100), last_heartbeat_at=now)
        order = order_place(
            buyer=buyer, requirements=Requirements(cards=cards, duration_hours=24, workload="training", pool=pool.pk)
        )
    lease = order.leases.get()
    return lease_start(lease_id=lease.pk, by="test", now=started)


def running_token_lease(
    *, buyer: Any, provider: Any, started_hours_ago: float = 3, model: str = "qwen3-72b", throughput: int = 10_000
) -> Lease:
    """A token order's lease (4 cards of an approved endpoint serving ``model``), running since some hours."""
    from decimal import Decimal

    from marketplace.token_dispatch import TokenRequest
    from marketplace.token_services import token_order_place
    from pools.endpoints import endpoint_approve, endpoint_register

    now = timezone.now()
    started = now - timedelta(hours=started_hours_ago)
    with time_machine.travel(started - timedelta(seconds=1), tick=False):
        pool = pool_factory(provider=provider, cards=100, last_heartbeat_at=now)
        served = endpoint_register(
            provider=provider,
            pool=pool,
            model=model,
            input_price=Decimal("2.00"),
            output_price=Decimal("8.00"),
            throughput_per_card=throughput,
            cards=4,
            by="test",
        )
        endpoint_approve(endpoint=served, by="operator")
    request = TokenRequest(model=model, input_tokens=1, output_tokens=1, workload="batch")
    with time_machine.travel(started, tick=False):
        order = token_order_place(buyer=buyer, request=request, endpoint_id=served.pk, by="test")
    return order.leases.get()


@pytest.fixture
def token_lease(buyer, provider) -> Lease:  # type: ignore[no-untyped-def]
    return running_token_lease(buyer=buyer, provider=provider)


@pytest.fixture
def lease(buyer, provider) -> Lease:  # type: ignore[no-untyped-def]
    return running_lease(buyer=buyer, provider=provider)


def gpu_event(lease: Lease, event_id: str, quantity: Any = 480, *, minutes_ago: float = 30, **changes: Any) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "agent://test/pool",
        "type": "compute.gpu_seconds",
        "subject": str(lease.pk),
        "time": (timezone.now() - timedelta(minutes=minutes_ago)).isoformat(),
        "data": {"quantity": quantity, "cards": lease.cards},
        **changes,
    }


def token_event(lease: Lease, event_id: str, **data: Any) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "agent://test/pool",
        "type": "compute.tokens",
        "subject": str(lease.pk),
        "time": (timezone.now() - timedelta(minutes=30)).isoformat(),
        "data": {"model": "qwen3-72b", "input_tokens": 1000, "output_tokens": 200, **data},
    }


@pytest.fixture(autouse=True)
def _money_at_a_fixed_moment(frozen_clock: Any) -> None:
    """Billing tests rate money: they run at ``TEST_NOW`` (tests/conftest.py)."""
