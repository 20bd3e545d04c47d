"""Holds: a prepaid buyer's running leases hold credit, drawn down by usage, released once when they end."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing.models import BankEvent, CreditHold
from billing.services.bank.holds import hold_review, holds_review
from billing.services.bank.state import bank_state, expected_cost
from core.exceptions import ConflictError, RuleViolation
from core.money import round_to_fen
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_end, lease_start, lease_terminate, leases_end_expired, order_place
from pools.services import pool_suspend
from tests.billing.factories import credit, prepaid, usage
from tests.factories import pool_factory

pytestmark = pytest.mark.django_db


def booked(buyer, provider, hours: int = 4, at=None) -> Lease:  # type: ignore[no-untyped-def]
    """A scheduled lease of 2 cards for ``hours`` on a new pool of ``provider`` (priced since yesterday),
    booked at ``at`` (now unless told) to start then."""
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=1)):
        pool_factory(provider=provider, cards=10, price_per_card_hour=Decimal("10"), last_heartbeat_at=now)
    order = order_place(
        buyer=buyer,
        requirements=Requirements(cards=2, duration_hours=hours, workload="training", gpu_model="H100-80G"),
        now=at,
    )
    return order.leases.get()


def hour_of(moment):  # type: ignore[no-untyped-def]
    return moment.replace(minute=0, second=0, microsecond=0)


def state(buyer, at):  # type: ignore[no-untyped-def]
    return bank_state(buyer_id=buyer.pk, at=at)


@pytest.fixture
def lease(buyer, provider) -> Lease:  # type: ignore[no-untyped-def]
    return booked(prepaid(buyer), provider)


def test_a_prepaid_lease_holds_the_expected_cost_of_its_booked_time(buyer, lease) -> None:
    credit(buyer, 1_000_000)
    start = lease.start_at

    lease_start(lease_id=lease.pk, by="test", now=start)

    hold = CreditHold.objects.get(lease=lease)
    assert hold.amount == round_to_fen(lease.estimated_cost) > 0  # 4 hours, all of the booked time
    assert (state(buyer, start).held, state(buyer, start).available) == (hold.amount, 1_000_000 - hold.amount)


def test_a_prepaid_buyer_whose_credit_does_not_cover_the_lease_cannot_start_it(
    buyer, provider, lease, make_client
) -> None:
    credit(buyer, expected_cost(lease=lease, at=lease.start_at) - 1)

    response = make_client(provider).post(f"/api/v1/leases/{lease.pk}/start/")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "insufficient_funds"
    lease.refresh_from_db()
    assert lease.status == "scheduled"
    assert not CreditHold.objects.exists()


def test_a_postpaid_buyer_starts_without_any_credit(buyer, provider) -> None:
    lease = booked(buyer, provider)

    lease_start(lease_id=lease.pk, by="test")

    assert not CreditHold.objects.exists()


def test_metered_usage_draws_the_hold_down(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    credit(buyer, 1_000_000)
    now = timezone.now()
    lease = booked(prepaid(buyer), provider, at=now - timedelta(hours=1))
    lease_start(lease_id=lease.pk, by="test", now=now - timedelta(hours=1))
    hold = CreditHold.objects.get(lease=lease)
    before = state(buyer, now)

    usage(lease, hour_of(now - timedelta(hours=1)), seconds=2 * 3600)  # two card-hours

    after = state(buyer, now)
    used = after.pending_usage
    assert used > 0
    assert after.held == hold.amount - used
    assert after.available == before.available == 1_000_000 - hold.amount


@pytest.mark.parametrize(
    "end",
    [
        lambda lease, now: lease_terminate(lease=lease, organization=lease.buyer, by="buyer"),
        lambda lease, now: leases_end_expired(now=lease.end_at + timedelta(seconds=1)),
        lambda lease, now: (pool_suspend(pool=lease.pool, by="operator"), lease_fail(lease, now)),
    ],
    ids=["terminated by the buyer", "booked time over", "pool suspended"],
)
def test_a_hold_is_released_once_whichever_path_ends_the_lease(buyer, lease, end) -> None:  # type: ignore[no-untyped-def]
    credit(buyer, 1_000_000)
    now = lease.start_at
    lease_start(lease_id=lease.pk, by="test", now=now)

    end(Lease.objects.get(pk=lease.pk), now)

    hold = CreditHold.objects.get(lease=lease)
    assert hold.status == "released" and hold.released_at is not None
    with pytest.raises(ConflictError):
        lease_end(lease_id=lease.pk, status="completed", reason="again", by="test")
    assert CreditHold.objects.get(lease=lease).released_at == hold.released_at
    assert state(buyer, now).held == 0


def lease_fail(lease: Lease, now) -> None:  # type: ignore[no-untyped-def]
    from marketplace.services import leases_fail_lost_pools

    leases_fail_lost_pools(lost_after_seconds=900)


def test_a_long_lease_holds_the_horizon_and_is_topped_up_as_it_runs(buyer, provider, settings) -> None:
    settings.BANK_HOLD_HORIZON_HOURS = 1
    start = timezone.now() - timedelta(hours=1)
    lease = booked(prepaid(buyer), provider, hours=6, at=start)
    credit(buyer, 1_000_000)
    lease_start(lease_id=lease.pk, by="test", now=start)
    first = CreditHold.objects.get(lease=lease).amount
    assert first == expected_cost(lease=lease, at=start) < round_to_fen(lease.estimated_cost)

    usage(lease, hour_of(start), seconds=2 * 3600)  # an hour of both cards: the hold is used up
    outcome = hold_review(hold_id=CreditHold.objects.get(lease=lease).pk, now=start + timedelta(hours=1))

    assert outcome == "extended"
    now = start + timedelta(hours=1)
    assert state(buyer, now).held == expected_cost(lease=lease, at=now)
    assert hold_review(hold_id=CreditHold.objects.get(lease=lease).pk, now=now) == "covered"


def test_a_lease_the_credit_cannot_cover_is_warned_then_ended_for_insufficient_funds(buyer, provider, settings) -> None:
    # given a prepaid lease whose first hour the credit just covers
    settings.BANK_HOLD_HORIZON_HOURS, settings.BANK_LEASE_GRACE_SECONDS = 1, 600
    start = timezone.now() - timedelta(hours=1)
    lease = booked(prepaid(buyer), provider, hours=6, at=start)
    credit(buyer, expected_cost(lease=lease, at=start), at=start - timedelta(minutes=1))
    lease_start(lease_id=lease.pk, by="test", now=start)
    usage(lease, hour_of(start), seconds=2 * 3600)
    hour_later = start + timedelta(hours=1)

    # when the hour is used and the next is not covered: warned, still warned within the grace, then ended
    outcomes = [
        holds_review(now=hour_later),
        holds_review(now=hour_later + timedelta(minutes=9)),
        holds_review(now=hour_later + timedelta(minutes=10)),
    ]

    assert outcomes == [{"warned": 1}, {"warned": 1}, {"ended": 1}]
    lease.refresh_from_db()
    assert (lease.status, lease.end_reason) == ("preempted", "insufficient_funds")
    assert CreditHold.objects.get(lease=lease).status == "released"
    assert list(BankEvent.objects.filter(lease=lease).order_by("id").values_list("kind", flat=True)) == [
        "lease_warned",
        "lease_ended",
    ]
    assert holds_review(now=hour_later + timedelta(minutes=11)) == {}


def test_a_top_up_after_the_warning_keeps_the_lease_running(buyer, provider, settings) -> None:
    settings.BANK_HOLD_HORIZON_HOURS = 1
    start = timezone.now() - timedelta(hours=1)
    lease = booked(prepaid(buyer), provider, hours=6, at=start)
    credit(buyer, expected_cost(lease=lease, at=start), at=start - timedelta(minutes=1))
    lease_start(lease_id=lease.pk, by="test", now=start)
    usage(lease, hour_of(start), seconds=2 * 3600)
    hour_later = start + timedelta(hours=1)
    assert holds_review(now=hour_later) == {"warned": 1}

    credit(buyer, 1_000_000, source="top_up", at=hour_later)

    assert holds_review(now=hour_later + timedelta(hours=1)) == {"extended": 1}
    assert CreditHold.objects.get(lease=lease).warned_at is None
    assert Lease.objects.get(pk=lease.pk).status == "running"


def test_a_prepaid_buyer_cannot_start_more_than_its_credit_covers(buyer, provider) -> None:
    first, second = booked(prepaid(buyer), provider), booked(buyer, provider)
    credit(buyer, expected_cost(lease=first, at=first.start_at) + expected_cost(lease=second, at=first.start_at) - 1)

    lease_start(lease_id=first.pk, by="test", now=first.start_at)
    with pytest.raises(RuleViolation, match="compute-bank credit"):
        lease_start(lease_id=second.pk, by="test", now=first.start_at)


def test_a_buyer_made_postpaid_again_holds_nothing_more_and_its_lease_runs_on(buyer, lease) -> None:
    from billing.models import Bank

    credit(buyer, expected_cost(lease=lease, at=lease.start_at))
    lease_start(lease_id=lease.pk, by="test", now=lease.start_at)
    Bank.objects.filter(organization=buyer).update(mode=Bank.Mode.POSTPAID)

    assert holds_review(now=lease.start_at + timedelta(hours=3)) == {"released": 1}

    assert Lease.objects.get(pk=lease.pk).status == "running"
    assert state(buyer, lease.start_at).held == 0
