"""What a buyer's bank holds: its balance, what its usage and holds have promised, what is free.

- balance: what is left of its grants that have not expired;
- pending usage: its metered usage, rated, that no finalized invoice has billed yet
  (the bank pays it at the month's invoice; ``unbilled_usage``);
- held: what its holds still reserve for running leases beyond their usage so far
  (a hold is drawn down by its lease's usage, billed or not);
- available: balance less pending usage and held; negative when usage ran ahead of the holds.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, Q, QuerySet, Sum

from billing.models import CreditGrant, CreditHold, Invoice, InvoiceLine, UsageRollup
from billing.rating import rate
from core.money import FEN_PER_YUAN, round_to_fen
from marketplace.models import Lease

BILLED = (Invoice.Status.FINALIZED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)


@dataclass
class BankState:
    balance: int
    pending_usage: int
    held: int
    held_by_lease: dict[Any, int] = field(default_factory=dict)
    used_by_lease: dict[Any, int] = field(default_factory=dict)  # of the leases with a hold: billed and pending

    @property
    def available(self) -> int:
        return self.balance - self.pending_usage - self.held


def spendable_grants(*, buyer_id: Any, at: datetime) -> QuerySet[CreditGrant]:
    return CreditGrant.objects.filter(buyer_id=buyer_id, remaining__gt=0).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=at)
    )


def unbilled_usage(*, buyer_id: Any) -> QuerySet[UsageRollup]:
    """The buyer's usage no finalized invoice has billed: the rows of the periods of its draft invoices
    (usage makes its month's draft as it is rolled up), and what late rows hold that none billed yet;
    each row once, however many drafts there are."""
    drafts = Invoice.objects.filter(buyer_id=buyer_id, status=Invoice.Status.DRAFT).values_list(
        "period_start", "period_end"
    )
    in_a_draft = Q(pk__in=[])
    for start, end in drafts:
        in_a_draft |= Q(hour__gte=start, hour__lt=end)
    return UsageRollup.objects.filter(buyer_id=buyer_id).filter(
        (Q(late=False) & in_a_draft) | (Q(late=True) & ~Q(quantity=F("billed_quantity")))
    )


def bank_state(*, buyer_id: Any, at: datetime) -> BankState:
    balance = int(spendable_grants(buyer_id=buyer_id, at=at).aggregate(total=Sum("remaining"))["total"] or 0)
    pending: dict[Any, int] = defaultdict(int)
    for line in rate(unbilled_usage(buyer_id=buyer_id), period_start=at):
        pending[line.lease_id] += line.amount
    holds = dict(
        CreditHold.objects.filter(buyer_id=buyer_id, status=CreditHold.Status.ACTIVE).values_list("lease_id", "amount")
    )
    billed = dict(
        InvoiceLine.objects.filter(lease_id__in=holds, invoice__status__in=BILLED)
        .values_list("lease_id")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    used_by_lease = {lease_id: int(billed.get(lease_id) or 0) + pending.get(lease_id, 0) for lease_id in holds}
    held_by_lease = {lease_id: max(0, amount - used_by_lease[lease_id]) for lease_id, amount in holds.items()}
    return BankState(
        balance=balance,
        pending_usage=sum(pending.values()),
        held=sum(held_by_lease.values()),
        held_by_lease=held_by_lease,
        used_by_lease=used_by_lease,
    )


def expected_cost(*, lease: Lease, at: datetime) -> int:
    """The expected cost (fen) of the lease's next horizon from ``at``, or of its booked time left if shorter:
    its estimated cost spread evenly over its booked time."""
    booked = (lease.end_at - lease.start_at).total_seconds()
    ahead = min(settings.BANK_HOLD_HORIZON_HOURS * 3600, max((lease.end_at - at).total_seconds(), 0))
    if booked <= 0 or ahead <= 0:
        return 0
    return round_to_fen(Decimal(lease.estimated_cost) * Decimal(ahead) / Decimal(booked))


def low_balance_threshold(threshold: int | None) -> int:
    return threshold if threshold is not None else settings.BANK_LOW_BALANCE_YUAN * FEN_PER_YUAN
