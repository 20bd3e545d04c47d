"""Recompute every balance two ways, from the ledger and from the rows it stands for."""

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import F, Q, Sum

from billing.models import (
    Account,
    BankMovement,
    CreditGrant,
    Invoice,
    InvoiceLine,
    Leg,
    PaymentAttempt,
    ProviderStatement,
    TopUp,
)
from vouchers.models import Redemption

Purpose = Account.Purpose


@dataclass(frozen=True)
class Difference:
    check: str
    subject: str
    ledger: int
    expected: int

    def __str__(self) -> str:
        return f"{self.check} {self.subject}: ledger {self.ledger}, from the records {self.expected}"


def _ledger(purpose: str) -> dict[Any, int]:
    rows = (
        Leg.objects.filter(account__purpose=purpose)
        .values_list("account__organization_id")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    return {organization: int(total) for organization, total in rows}


def _compare(check: str, ledger: dict[Any, int], expected: dict[Any, int]) -> Iterator[Difference]:
    for subject in sorted(set(ledger) | set(expected), key=str):
        if ledger.get(subject, 0) != expected.get(subject, 0):
            yield Difference(check, str(subject or "platform"), ledger.get(subject, 0), expected.get(subject, 0))


def reconcile() -> list[Difference]:
    """Every difference found; an empty list means the books agree."""
    differences: list[Difference] = []

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT entry_id, currency, sum(amount) FROM billing_leg"
            " GROUP BY entry_id, currency HAVING sum(amount) <> 0"
        )
        for entry_id, currency, total in cursor.fetchall():
            differences.append(Difference("entry balance", f"{entry_id} {currency}", int(total), 0))

    refunded: dict[Any, int] = defaultdict(int)
    for invoice_id, amount in PaymentAttempt.objects.filter(
        status=PaymentAttempt.Status.SUCCEEDED, refunded=True
    ).values_list("invoice_id", "amount"):
        refunded[invoice_id] += amount
    receivable: dict[Any, int] = defaultdict(int)
    for invoice_id, buyer_id, status, due, paid in Invoice.objects.exclude(status=Invoice.Status.DRAFT).values_list(
        "pk", "buyer_id", "status", "amount_due", "amount_paid"
    ):
        receivable[buyer_id] += (0 if status == Invoice.Status.VOID else due) - paid + refunded[invoice_id]
    differences += _compare("buyer receivable", _ledger(Purpose.BUYER_RECEIVABLE), receivable)

    statements = ProviderStatement.objects.values_list("provider_id").annotate(
        net=Sum("net"), commission=Sum("commission")
    )
    differences += _compare(
        "provider payable", _ledger(Purpose.PROVIDER_PAYABLE), {p: -int(net) for p, net, _ in statements}
    )
    differences += _compare(
        "platform revenue",
        _ledger(Purpose.PLATFORM_REVENUE),
        {None: -sum(int(commission) for _, _, commission in statements)},
    )

    charged = PaymentAttempt.objects.filter(status=PaymentAttempt.Status.SUCCEEDED).aggregate(
        total=Sum("amount"), refunded=Sum("amount", filter=Q(refunded=True))
    )
    topped_up = TopUp.objects.filter(status=TopUp.Status.SUCCEEDED).aggregate(total=Sum("amount"))["total"]
    differences += _compare(
        "stripe clearing",
        _ledger(Purpose.STRIPE_CLEARING),
        {None: int(charged["total"] or 0) - int(charged["refunded"] or 0) + int(topped_up or 0)},
    )
    differences += _bank()

    owed_by_issuers: dict[Any, int] = defaultdict(int)
    for issuer_id, amount, reversed_amount in Redemption.objects.values_list(
        "program__issuer_id", "amount", "reversal__amount"
    ):
        owed_by_issuers[issuer_id] += amount - (reversed_amount or 0)
    differences += _compare("voucher receivable", _ledger(Purpose.VOUCHER_RECEIVABLE), owed_by_issuers)

    mismatched = (
        Invoice.objects.exclude(status=Invoice.Status.DRAFT)
        .annotate(lines_total=Sum("lines__amount"))
        .exclude(subtotal=F("lines_total"))
        .exclude(subtotal=0, lines_total__isnull=True)
        .values_list("number", "subtotal", "lines_total")
    )
    for number, subtotal, lines_total in mismatched:
        differences.append(Difference("invoice lines", str(number), int(lines_total or 0), int(subtotal)))

    voucher_lines = InvoiceLine.objects.values_list("invoice_id").annotate(total=Sum("voucher_amount")).order_by()
    credits = dict(Invoice.objects.exclude(status=Invoice.Status.DRAFT).values_list("pk", "voucher_credit"))
    for invoice_id, total in voucher_lines:
        if int(total or 0) != credits.get(invoice_id, int(total or 0)):
            differences.append(Difference("voucher lines", str(invoice_id), int(total or 0), credits[invoice_id]))
    differences += _usage_beyond_leases()
    return differences


# Per (lease, hour, kind): what the rollups hold, and the most the lease's cards can do in a whole
# hour: cards x 3,600 x (1 + the tolerance) card-seconds; cards x 3,600 x its GPU model's tokens per
# second x the headroom tokens. Ingest caps each hour tighter, by the seconds the lease ran in it
# (``billing.services.usage._over_hourly_limits``); this bound holds for rows written by any path.
# Late rows hold what came after a bucket's row was billed: a bucket's rows sum to its events.
_BEYOND = """
WITH usage AS (
    SELECT r.lease_id, r.hour, r.metric = 'gpu_seconds' AS is_seconds, sum(r.quantity) AS reported
    FROM billing_usagerollup r GROUP BY 1, 2, 3
), speeds AS (
    SELECT * FROM unnest(%(models)s::text[], %(speeds)s::bigint[]) AS s (gpu_model_id, tokens_per_second)
)
SELECT u.lease_id, u.hour, u.is_seconds, u.reported, floor(l.cards * 3600 * CASE
    WHEN u.is_seconds THEN %(tolerance)s ELSE coalesce(s.tokens_per_second, %(most)s) * %(headroom)s END
) AS allowed
FROM usage u
JOIN marketplace_lease l ON l.id = u.lease_id
JOIN pools_resourcepool p ON p.id = l.pool_id
LEFT JOIN speeds s ON s.gpu_model_id = p.gpu_model_id
"""


def _usage_beyond_leases() -> list[Difference]:
    """Usage no lease could have used: more card-seconds or tokens in an hour than its cards can
    do. The books balance around such usage (a token flood); this catches it."""
    from django.conf import settings

    from pools.reference_data import TOKENS_PER_SECOND

    differences = []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM ({_BEYOND}) AS checked WHERE reported > allowed ORDER BY lease_id, hour",  # noqa: S608
            {
                "models": list(TOKENS_PER_SECOND),
                "speeds": list(TOKENS_PER_SECOND.values()),
                "most": max(TOKENS_PER_SECOND.values()),
                "tolerance": 1 + settings.USAGE_HOURLY_TOLERANCE,
                "headroom": settings.USAGE_TOKENS_HEADROOM,
            },
        )
        for lease_id, hour, is_seconds, reported, allowed in cursor.fetchall():
            kind = "card-seconds" if is_seconds else "tokens"
            subject = f"lease {lease_id} {hour:%Y-%m-%d %H}:00 UTC {kind}"
            differences.append(Difference("usage beyond the lease", subject, int(reported), int(allowed)))
    return differences


def _bank() -> list[Difference]:
    """Each buyer's credit: its grants' remaining is its bank liability, paid and granted apart;
    what it drew and its invoices booked meet in its bank clearing; expiries are the breakage;
    credit the platform gave is its promotion expense."""
    differences: list[Difference] = []
    remaining: dict[str, dict[Any, int]] = {Purpose.BANK_PAID: defaultdict(int), Purpose.BANK_GRANTED: defaultdict(int)}
    given = 0
    for buyer_id, source, amount, left in CreditGrant.objects.values_list("buyer_id", "source", "amount", "remaining"):
        paid = source in CreditGrant.PAID
        remaining[Purpose.BANK_PAID if paid else Purpose.BANK_GRANTED][buyer_id] -= left
        given += 0 if paid else amount
    for purpose, expected in remaining.items():
        differences += _compare(f"bank {purpose}", _ledger(purpose), expected)

    clearing: dict[Any, int] = defaultdict(int)
    for buyer_id, total in (
        BankMovement.objects.filter(reason__in=[BankMovement.Reason.DRAW, BankMovement.Reason.DRAW_REVERSED])
        .values_list("buyer_id")
        .annotate(total=Sum("amount"))
        .order_by()
    ):
        clearing[buyer_id] += int(total)
    for buyer_id, total in (
        Invoice.objects.exclude(status__in=[Invoice.Status.DRAFT, Invoice.Status.VOID])
        .values_list("buyer_id")
        .annotate(total=Sum("bank_credit"))
        .order_by()
    ):
        clearing[buyer_id] += int(total)
    differences += _compare("bank clearing", _ledger(Purpose.BANK_CLEARING), clearing)

    expired = BankMovement.objects.filter(reason=BankMovement.Reason.EXPIRY).aggregate(total=Sum("amount"))["total"]
    differences += _compare("breakage", _ledger(Purpose.BREAKAGE), {None: int(expired or 0)})
    differences += _compare("promotion expense", _ledger(Purpose.PROMOTION_EXPENSE), {None: given})
    return differences
