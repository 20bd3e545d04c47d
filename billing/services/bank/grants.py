"""Credit in and out: grants, draws (soonest-expiring first), expiry into breakage.

Every change locks the buyer's ``Bank`` row first, then its grants in primary-key
order, inside one transaction: concurrent draws take turns, and each sees what
the one before it left. A CHECK constraint keeps every grant's remaining at zero
or more whatever happens above it. Each change posts one journal entry and one
movement per grant it touched:

- a grant: the offset (Stripe clearing for a top-up, promotion expense for credit
  the platform gives) is debited, the buyer's bank liability credited (paid and
  granted credit are separate accounts);
- a draw: the liabilities are debited, the buyer's bank clearing credited; the
  invoice that drew it debits the clearing and credits the buyer's receivable, so
  the clearing of a buyer is zero once its invoices are booked;
- an expiry: the liability is debited, breakage credited.
"""

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from billing.models import Account, Bank, BankEvent, BankMovement, CreditGrant, JournalEntry, StripeCustomer
from billing.services.bank.state import bank_state, low_balance_threshold, spendable_grants
from billing.services.ledger import Purpose, account_for, entry_post, entry_reverse
from core.exceptions import ApplicationError, RuleViolation
from core.locks import retry_on_conflict
from core.money import format_yuan
from organizations.models import AuditEvent, Organization
from organizations.services import audit_record

logger = logging.getLogger(__name__)

Source = CreditGrant.Source
Reason = BankMovement.Reason


def bank_of(buyer: Organization | Any) -> Bank:
    """The buyer's bank settings (made on first use), not locked."""
    buyer_id: Any = getattr(buyer, "pk", buyer)
    bank, _ = Bank.objects.get_or_create(organization_id=buyer_id)
    return bank


def bank_lock(buyer: Organization | Any) -> Bank:
    """The buyer's bank row, locked until the transaction ends: every change of its credit takes it first."""
    bank = bank_of(buyer)
    return Bank.objects.select_for_update().get(pk=bank.pk)


def liability(grant: CreditGrant) -> Account:
    purpose = Purpose.BANK_PAID if grant.is_paid else Purpose.BANK_GRANTED
    return account_for(purpose=purpose, organization=Organization(pk=grant.buyer_id), currency=grant.currency)


def _burn_order(grant: CreditGrant) -> tuple[Any, ...]:
    """Soonest-expiring first (never-expiring last), then by priority, then oldest."""
    return (grant.expires_at is None, grant.expires_at or 0, grant.priority, grant.created_at, grant.pk)


@transaction.atomic
def grant_create(
    *,
    buyer: Organization,
    source: str,
    amount: int,
    by: str,
    expires_at: datetime | None = None,
    priority: int = 100,
    note: str = "",
    reference: str = "",
    offset: str | None = None,
    now: datetime | None = None,
) -> CreditGrant:
    """Give the buyer credit: a top-up it paid for, or credit from the platform. ``offset`` is the
    account purpose the credit comes from when it is neither: the buyer's receivable for money an
    invoice gives back as credit."""
    now = now or timezone.now()
    if buyer.kind != Organization.Kind.BUYER:
        raise ApplicationError(
            gettext("%(slug)s is a %(kind)s; only buyers have a bank.") % {"slug": buyer.slug, "kind": buyer.kind},
            code="not_a_buyer",
        )
    if amount <= 0:
        raise ApplicationError(gettext("A grant must be more than 0.00 yuan."), code="invalid_amount")
    if expires_at is not None and expires_at <= now:
        raise ApplicationError(gettext("A grant must expire in the future, or never."), code="invalid_expiry")
    bank = bank_lock(buyer)
    grant = CreditGrant.objects.create(
        buyer=buyer,
        source=source,
        amount=amount,
        remaining=amount,
        currency=bank.currency,
        expires_at=expires_at,
        priority=priority,
        note=note[:300],
        granted_by=by[:200],
        created_at=now,
    )
    reference = reference or f"grant:{grant.pk}"
    offset = offset or (Purpose.STRIPE_CLEARING if grant.is_paid else Purpose.PROMOTION_EXPENSE)
    owner = buyer if offset == Purpose.BUYER_RECEIVABLE else None
    entry = entry_post(
        kind=f"bank.grant.{source}",
        description=f"{grant.get_source_display()} of {format_yuan(amount)} {grant.currency} for {buyer.slug}",
        reference=reference,
        legs=[
            (account_for(purpose=offset, organization=owner, currency=grant.currency), amount),
            (liability(grant), -amount),
        ],
        at=now,
    )
    assert entry is not None
    BankMovement.objects.create(
        buyer=buyer, grant=grant, amount=amount, reason=Reason.GRANT, reference=reference, entry=entry, created_at=now
    )
    if bank.low_balance_since and bank_state(buyer_id=buyer.pk, at=now).available >= low_balance_threshold(
        bank.low_balance_threshold
    ):
        Bank.objects.filter(pk=bank.pk).update(low_balance_since=None)
    audit_record(
        actor=by,
        action=AuditEvent.Action.BANK_CREDIT_GRANT,
        target=grant,
        organization=buyer,
        summary={
            "source": source,
            "amount": format_yuan(amount),
            "currency": grant.currency,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "reference": reference,
        },
    )
    logger.info("bank credit granted", extra={"buyer": str(buyer.pk), "source": source, "amount": amount})
    return grant


@retry_on_conflict
@transaction.atomic
def bank_draw(
    *,
    buyer: Organization,
    amount: int,
    reference: str,
    partial: bool = False,
    review: bool = True,
    now: datetime | None = None,
) -> int:
    """Spend ``amount`` of the buyer's credit for ``reference``; returns what was drawn.

    With ``partial`` as much as there is is drawn (an invoice takes what the bank has);
    without, all or nothing: too little credit is refused with ``insufficient_funds``.
    Without ``review`` the caller checks the balance (``bank_balance_changed``) once
    what it draws for is booked: an invoice's usage counts as pending until it is finalized.
    """
    now = now or timezone.now()
    if amount <= 0:
        return 0
    bank = bank_lock(buyer)
    grants = sorted(
        spendable_grants(buyer_id=buyer.pk, at=now).select_for_update().order_by("pk"),
        key=_burn_order,
    )
    balance = sum(grant.remaining for grant in grants)
    if balance < amount and not partial:
        raise RuleViolation(
            gettext("The bank has %(format_yuan)s, less than the %(format_yuan2)s asked for.")
            % {"format_yuan": format_yuan(balance), "format_yuan2": format_yuan(amount)},
            code="insufficient_funds",
        )
    taken: list[tuple[CreditGrant, int]] = []
    left = amount
    for grant in grants:
        if not left:
            break
        part = min(grant.remaining, left)
        taken.append((grant, part))
        left -= part
    drawn = amount - left
    if not drawn:
        return 0
    by_account: dict[int, tuple[Account, int]] = {}
    for grant, part in taken:
        account = liability(grant)
        by_account[account.pk] = (account, by_account.get(account.pk, (account, 0))[1] + part)
    clearing = account_for(purpose=Purpose.BANK_CLEARING, organization=buyer, currency=bank.currency)
    entry = entry_post(
        kind="bank.draw",
        description=f"Compute bank credit of {buyer.slug} drawn for {reference}",
        reference=reference,
        legs=[*by_account.values(), (clearing, -drawn)],
        at=now,
    )
    assert entry is not None
    for grant, part in taken:
        CreditGrant.objects.filter(pk=grant.pk).update(remaining=F("remaining") - part)
    BankMovement.objects.bulk_create(
        BankMovement(
            buyer=buyer, grant=grant, amount=-part, reason=Reason.DRAW, reference=reference, entry=entry, created_at=now
        )
        for grant, part in taken
    )
    if review:
        bank_balance_changed(bank=bank, now=now)
    return drawn


@transaction.atomic
def bank_draws_reverse(*, buyer: Organization | Any, reference: str, reason: str, now: datetime | None = None) -> int:
    """Give back what was drawn for ``reference`` (an invoice voided), to the grants it came from,
    once; a grant that expired meanwhile expires again at once. Returns the amount given back."""
    now = now or timezone.now()
    buyer_id: Any = getattr(buyer, "pk", buyer)
    bank_lock(buyer_id)
    draws = list(
        BankMovement.objects.filter(buyer_id=buyer_id, reference=reference, reason=Reason.DRAW, reversed=False)
        .select_related("entry")
        .order_by("grant_id")
    )
    if not draws:
        return 0
    grants = {
        grant.pk: grant
        for grant in CreditGrant.objects.select_for_update().filter(pk__in={m.grant_id for m in draws}).order_by("pk")
    }
    reversals: dict[Any, JournalEntry] = {}
    for entry in sorted({movement.entry for movement in draws}, key=lambda entry: str(entry.pk)):
        reversals[entry.pk] = entry_reverse(entry=entry, reason=reason, at=now)
    for movement in draws:
        grant = grants[movement.grant_id]
        grant.remaining -= movement.amount  # a draw's amount is negative
        CreditGrant.objects.filter(pk=grant.pk).update(remaining=F("remaining") - movement.amount)
        BankMovement.objects.create(
            buyer_id=buyer_id,
            grant=grant,
            amount=-movement.amount,
            reason=Reason.DRAW_REVERSED,
            reference=reference,
            entry=reversals[movement.entry_id],
            created_at=now,
        )
    BankMovement.objects.filter(pk__in=[movement.pk for movement in draws]).update(reversed=True)
    for grant in grants.values():
        if grant.expires_at is not None and grant.expires_at <= now:
            _expire(grant, now)
    return -sum(movement.amount for movement in draws)


def _expire(grant: CreditGrant, now: datetime) -> int:
    """Move what is left of an expired, locked grant to breakage."""
    rest = grant.remaining
    if rest <= 0:
        return 0
    reference = f"grant:{grant.pk}"
    entry = entry_post(
        kind="bank.expiry",
        description=f"{grant.get_source_display()} credit expired at {grant.expires_at:%Y-%m-%d %H:%M} UTC",
        reference=reference,
        legs=[(liability(grant), rest), (account_for(purpose=Purpose.BREAKAGE, currency=grant.currency), -rest)],
        at=now,
    )
    assert entry is not None
    CreditGrant.objects.filter(pk=grant.pk).update(remaining=0)
    grant.remaining = 0
    BankMovement.objects.create(
        buyer_id=grant.buyer_id,
        grant=grant,
        amount=-rest,
        reason=Reason.EXPIRY,
        reference=reference,
        entry=entry,
        created_at=now,
    )
    logger.info("bank credit expired", extra={"buyer": str(grant.buyer_id), "grant": str(grant.pk), "amount": rest})
    return rest


def grants_expire(*, now: datetime | None = None) -> int:
    """Move what is left of every expired grant to breakage, one buyer per transaction. Returns the fen expired."""
    now = now or timezone.now()
    buyers = (
        CreditGrant.objects.filter(remaining__gt=0, expires_at__lte=now)
        .values_list("buyer_id", flat=True)
        .distinct()
        .order_by("buyer_id")
    )
    return sum(_expire_for(buyer_id=buyer_id, now=now) for buyer_id in list(buyers))


@retry_on_conflict
@transaction.atomic
def _expire_for(*, buyer_id: Any, now: datetime) -> int:
    bank = bank_lock(buyer_id)
    expired = CreditGrant.objects.select_for_update().filter(buyer_id=buyer_id, remaining__gt=0, expires_at__lte=now)
    total = sum(_expire(grant, now) for grant in expired.order_by("pk"))
    if total:
        bank_balance_changed(bank=bank, now=now)
    return total


# --- telling the buyer ----------------------------------------------------------------


def bank_event(*, buyer_id: Any, kind: str, message: str, now: datetime, lease_id: Any = None) -> BankEvent:
    """Record something the buyer should know (shown in ``GET bank/``), and log it."""
    logger.warning(
        "bank event", extra={"buyer": str(buyer_id), "kind": kind, "lease": str(lease_id or ""), "text": message}
    )
    return BankEvent.objects.create(
        buyer_id=buyer_id, kind=kind, message=message[:500], lease_id=lease_id, created_at=now
    )


# What a low balance means depends on how the buyer pays: only a prepaid buyer's work stops.
_LOW_BALANCE_ADVICE: dict[str, str] = {
    Bank.Mode.PREPAID: "top up to keep prepaid work running.",
    Bank.Mode.POSTPAID: "top up to keep paying invoices from credit; what it does not cover is charged to your card.",
}


def bank_balance_changed(*, bank: Bank, now: datetime) -> None:
    """After credit was spent or reserved (``bank`` locked): one low-balance event per fall below the
    threshold, and an automatic top-up queued if the buyer set one up and has a card on file."""
    available = bank_state(buyer_id=bank.organization_id, at=now).available
    threshold = low_balance_threshold(bank.low_balance_threshold)
    if available < threshold and bank.low_balance_since is None:
        Bank.objects.filter(pk=bank.pk).update(low_balance_since=now)
        bank.low_balance_since = now
        bank_event(
            buyer_id=bank.organization_id,
            kind=BankEvent.Kind.LOW_BALANCE,
            message=f"Available credit is {format_yuan(available)} {bank.currency}, "
            f"below {format_yuan(threshold)}: {_LOW_BALANCE_ADVICE[bank.mode]}",
            now=now,
        )
    elif available >= threshold and bank.low_balance_since is not None:
        Bank.objects.filter(pk=bank.pk).update(low_balance_since=None)
    if (
        bank.auto_top_up_threshold is not None
        and available < bank.auto_top_up_threshold
        and StripeCustomer.objects.filter(organization_id=bank.organization_id)
        .exclude(default_payment_method="")
        .exists()
    ):
        buyer_id = str(bank.organization_id)
        # What committed stands if the broker is away: the next change of the balance asks again.
        transaction.on_commit(lambda: _queue_auto_top_up(buyer_id), robust=True)


def _queue_auto_top_up(buyer_id: str) -> None:
    from billing.tasks import bank_auto_top_up

    bank_auto_top_up.delay(buyer_id)


@transaction.atomic
def bank_settings_set(*, buyer: Organization, changes: dict[str, int | None]) -> Bank:
    """The buyer's low-balance threshold and automatic top-up (threshold and amount, both or neither)."""
    from billing.services.bank.top_ups import top_up_check

    bank = bank_lock(buyer)
    for name, value in changes.items():
        setattr(bank, name, value)
    if (bank.auto_top_up_threshold is None) != (bank.auto_top_up_amount is None):
        raise ApplicationError(
            gettext("Set both auto_top_up_threshold and auto_top_up_amount, or neither."), code="auto_top_up_incomplete"
        )
    if bank.auto_top_up_amount is not None:
        top_up_check(amount=bank.auto_top_up_amount, currency=bank.currency)
    bank.save(update_fields=["low_balance_threshold", "auto_top_up_threshold", "auto_top_up_amount"])
    return bank
