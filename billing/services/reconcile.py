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
