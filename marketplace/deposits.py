"""Compute-bank deposits: the holder of a reserved lease puts card-hours it will not use back on
the market (``CapacityDeposit``), and withdraws those not resold yet. What a resale earns is
credited by billing, at the reseller's invoice (``billing.reservations``)."""

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max, Sum
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ConflictError, RuleViolation
from marketplace.models import CapacityDeposit, Commitment, Lease
from organizations.models import Organization

logger = logging.getLogger(__name__)


def _field_error(field: str, code: str, message: str) -> RuleViolation:
    return RuleViolation(message, code=code, fields={field: [{"code": code, "message": message}]})


def _ceil_hour(at: datetime) -> datetime:
    floor = at.replace(minute=0, second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(hours=1)


@transaction.atomic
def deposit_create(
    *,
    lease: Lease,
    depositor: Organization,
    cards: int,
    start_at: datetime,
    price: Decimal | None = None,
    by: str,
    now: datetime | None = None,
) -> CapacityDeposit:
    """Deposit ``cards`` of a reserved lease from the whole hour ``start_at`` (now or later) to its
    booking's end. The lease's deposits never hold more of its cards at once than it has."""
    now = now or timezone.now()
    locked = Lease.objects.select_for_update().select_related("price_plan").get(pk=lease.pk)
    if locked.buyer_id != depositor.pk:
        raise ConflictError(gettext("Only the lease's buyer deposits its cards."), code="not_lease_buyer")
    if locked.commitment != Commitment.RESERVED or locked.endpoint_id is not None or locked.deposit_id is not None:
        raise RuleViolation(
            gettext(
                "Only a reserved card lease can be deposited; an on-demand lease is billed only "
                "as used: end it instead."
            ),
            code="lease_not_reserved",
        )
    if not locked.is_active:
        raise RuleViolation(
            gettext("This lease is %(status)s; only an active lease is deposited.") % {"status": locked.status},
            code="lease_not_active",
        )
    end_at = locked.price_locked_until
    if start_at != start_at.replace(minute=0, second=0, microsecond=0):
        raise _field_error("start_at", "not_whole_hour", "start_at must be a whole hour (minutes and seconds 0).")
    earliest = max(now, locked.start_at).replace(minute=0, second=0, microsecond=0)
    if start_at < earliest or start_at >= end_at:
        raise _field_error(
            "start_at",
            "outside_booking",
            f"start_at must lie from this hour and the booking's start to before its end "
            f"({end_at.astimezone(UTC).isoformat()}).",
        )
    deposited = (
        CapacityDeposit.objects.filter(lease=locked, end_at__gt=start_at).aggregate(cards=Sum("cards"))["cards"] or 0
    )
    if deposited + cards > locked.cards:
        raise _field_error(
            "cards",
            "too_many_cards",
            f"The lease has {locked.cards} cards and {deposited} of them are deposited already in these hours; "
            f"deposit at most {locked.cards - deposited}.",
        )
    if price is not None and price >= locked.price_plan.price_per_card_hour:
        raise _field_error(
            "price",
            "price_not_lower",
            f"A deposit's price must be lower than the pool's ({locked.price_plan.price_per_card_hour}); "
            "leave it out to resell at the pool's on-demand price.",
        )
    deposit = CapacityDeposit.objects.create(
        lease=locked,
        depositor_id=locked.buyer_id,
        pool_id=locked.pool_id,
        cards=cards,
        start_at=max(start_at, locked.start_at),  # the hour the booking starts in: from its start
        end_at=end_at,
        deposited_until=end_at,
        price=price,
        created_at=now,
    )
    logger.info("capacity deposited", extra={"deposit": str(deposit.pk), "cards": cards, "by": by})
    return deposit


@transaction.atomic
def deposit_withdraw(*, deposit: CapacityDeposit, by: str, now: datetime | None = None) -> CapacityDeposit:
    """Take back the deposit's hours not resold: its end moves back to the next whole hour, or to
    the end of the latest lease placed on it, whichever is later."""
    now = now or timezone.now()
    locked = CapacityDeposit.objects.select_for_update().get(pk=deposit.pk)
    if locked.withdrawn_at is not None:
        raise ConflictError(gettext("This deposit was withdrawn already."), code="deposit_withdrawn")
    sold_until = (
        Lease.objects.filter(deposit=locked)
        .exclude(status=Lease.Status.CANCELLED, started_at__isnull=True)
        .aggregate(end=Max("end_at"))["end"]
    )
    keep = max(_ceil_hour(now), sold_until or locked.start_at, locked.start_at)
    locked.end_at, locked.withdrawn_at = min(keep, locked.end_at), now
    locked.save(update_fields=["end_at", "withdrawn_at"])
    logger.info("deposit withdrawn", extra={"deposit": str(locked.pk), "end_at": locked.end_at.isoformat(), "by": by})
    return locked


def deposit_list(*, organization: Organization) -> Any:
    """A buyer's deposits, newest first; an operator's: all."""
    deposits = CapacityDeposit.objects.all()
    if organization.kind == Organization.Kind.OPERATOR:
        return deposits
    return deposits.filter(depositor=organization)
