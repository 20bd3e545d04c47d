"""Holds: a prepaid buyer's running work can never overspend its credit.

When a prepaid buyer's lease starts (``hold_take``, inside the marketplace's start
transaction), the expected cost of its booked time, up to the horizon, is held; a
buyer whose available credit does not cover it cannot start. The lease's metered
usage draws the hold down. Every ``BANK_CHECK_SECONDS`` (``holds_review``) a hold
that no longer covers the lease's next horizon is topped up from available credit;
if there is not enough, the buyer is warned, and after ``BANK_LEASE_GRACE_SECONDS``
the lease ends with ``end_reason`` ``insufficient_funds``: its usage is billed as
any other's. The hold is released once, inside the transaction that ends the lease,
whichever path ends it (``hold_release``).
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from billing.models import Bank, BankEvent, CreditHold
from billing.services.bank.grants import bank_balance_changed, bank_event, bank_lock
from billing.services.bank.state import bank_state, expected_cost
from core.exceptions import ConflictError, RuleViolation
from core.money import format_yuan
from marketplace.models import Lease
from marketplace.services import lease_end

logger = logging.getLogger(__name__)

INSUFFICIENT_FUNDS = "insufficient_funds"


def hold_take(lease: Lease, now: datetime) -> None:
    """Lease start hook: hold the expected cost for a prepaid buyer, or refuse the start."""
    if not Bank.objects.filter(organization_id=lease.buyer_id, mode=Bank.Mode.PREPAID).exists():
        return
    bank = bank_lock(lease.buyer_id)
    needed = expected_cost(lease=lease, at=now)
    available = bank_state(buyer_id=lease.buyer_id, at=now).available
    if available < needed:
        logger.info("lease refused for funds", extra={"lease": str(lease.pk), "needed": needed, "available": available})
        raise RuleViolation(
            gettext(
                "This lease needs %(format_yuan)s %(currency)s of the buyer's compute-bank "
                "credit held to start; %(format_yuan2)s is available. The buyer tops up with "
                "POST /api/v1/bank/top-ups/."
            )
            % {
                "format_yuan": format_yuan(needed),
                "currency": bank.currency,
                "format_yuan2": format_yuan(max(available, 0)),
            },
            code=INSUFFICIENT_FUNDS,
            details={"needed": format_yuan(needed), "available": format_yuan(available)},
        )
    CreditHold.objects.create(buyer_id=lease.buyer_id, lease=lease, amount=needed, created_at=now)
    bank_balance_changed(bank=bank, now=now)


def hold_release(lease: Lease, now: datetime) -> None:
    """Lease end hook: the hold is released once (a released hold is never released again)."""
    CreditHold.objects.filter(lease=lease, status=CreditHold.Status.ACTIVE).update(
        status=CreditHold.Status.RELEASED, released_at=now
    )


def holds_review(*, now: datetime | None = None) -> dict[str, int]:
    """Check every active hold against its lease's next horizon (Celery beat). Returns the outcomes counted."""
    now = now or timezone.now()
    outcomes: dict[str, int] = {}
    holds = CreditHold.objects.filter(status=CreditHold.Status.ACTIVE).order_by("buyer_id", "created_at")
    for hold_id in list(holds.values_list("pk", flat=True)):
        outcome = hold_review(hold_id=hold_id, now=now)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def hold_review(*, hold_id: Any, now: datetime | None = None) -> str:
    """One hold: ``covered``, ``extended``, ``warned``, ``ended`` (for insufficient funds) or ``released``."""
    now = now or timezone.now()
    outcome, lease_id = _review(hold_id, now)
    if outcome != "ended":
        return outcome
    try:
        lease = lease_end(
            lease_id=lease_id, status=Lease.Status.PREEMPTED, reason=INSUFFICIENT_FUNDS, by="compute bank", now=now
        )
    except ConflictError:  # ended by another path meanwhile; its hold went with it
        return "released"
    bank_event(
        buyer_id=lease.buyer_id,
        kind=BankEvent.Kind.LEASE_ENDED,
        message=f"Lease {lease.pk} was ended: the compute bank could not cover its next "
        f"{settings.BANK_HOLD_HORIZON_HOURS} hours. Its usage so far is billed as usual.",
        now=now,
        lease_id=lease.pk,
    )
    return outcome


@transaction.atomic
def _review(hold_id: Any, now: datetime) -> tuple[str, Any]:
    hold = CreditHold.objects.select_related("lease").get(pk=hold_id)
    lease = Lease.objects.select_for_update().get(pk=hold.lease_id)  # the lease first, as lease_end takes them
    bank = bank_lock(hold.buyer_id)
    hold.refresh_from_db()
    if hold.status != CreditHold.Status.ACTIVE:
        return "released", lease.pk
    # A lease that ended cannot keep a hold through lease_end; checked so that a hold never outlives its
    # lease. A buyer an operator made postpaid again holds nothing more.
    if not lease.is_active or bank.mode != Bank.Mode.PREPAID:
        hold_release(lease, now)
        return "released", lease.pk
    state = bank_state(buyer_id=hold.buyer_id, at=now)
    left = state.held_by_lease.get(lease.pk, 0)
    shortfall = expected_cost(lease=lease, at=now) - left
    if shortfall <= 0:
        outcome = "covered"
    elif state.available >= shortfall:
        # Usage beyond the hold (an hour dearer than the booking's average price) is pending usage,
        # not held: the hold grows past it first, so that it holds the whole horizon again.
        hold.amount = max(hold.amount, state.used_by_lease.get(lease.pk, 0)) + shortfall
        outcome = "extended"
    elif hold.warned_at is None:
        hold.warned_at = now
        CreditHold.objects.filter(pk=hold.pk).update(warned_at=now)
        bank_event(
            buyer_id=hold.buyer_id,
            kind=BankEvent.Kind.LEASE_WARNED,
            message=f"Lease {lease.pk} needs {format_yuan(shortfall)} {bank.currency} more credit for its next "
            f"{settings.BANK_HOLD_HORIZON_HOURS} hours; top up within "
            f"{settings.BANK_LEASE_GRACE_SECONDS // 60} minutes or it will be ended.",
            now=now,
            lease_id=lease.pk,
        )
        return "warned", lease.pk
    elif now - hold.warned_at >= timedelta(seconds=settings.BANK_LEASE_GRACE_SECONDS):
        return "ended", lease.pk
    else:
        return "warned", lease.pk
    CreditHold.objects.filter(pk=hold.pk).update(amount=hold.amount, warned_at=None)
    if outcome == "extended":
        bank_balance_changed(bank=bank, now=now)
    return outcome, lease.pk
