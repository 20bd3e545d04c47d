"""Invoices: drafts that grow with usage, finalization, void.

Finalizing is one transaction, in the order of ARCHITECTURE.md: rate the
unbilled usage, let vouchers pay their share, then compute-bank credits, post
the ledger (the buyer owes the rest; each provider is owed its lines less the
platform's commission; an issuer owes what its vouchers paid), accrue the
providers' statements, give the invoice its number. Collection follows after
commit. Running it twice, or concurrently, changes nothing the second time.
"""

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from billing.bank_credits import banks_lock, banks_review, give_back_to_bank, pay_from_bank
from billing.locks import invoice_lock
from billing.metrics import INVOICES_FINALIZED, INVOICES_SET_ASIDE, count_on_commit
from billing.models import (
    Account,
    CreditGrant,
    DepositResale,
    Invoice,
    InvoiceAdjustment,
    InvoiceLine,
    JournalEntry,
    PaymentAttempt,
    ProviderStatement,
)
from billing.periods import local_year, month_of
from billing.rating import RatedLine, late_rows_bill, rate, rate_unbilled, unbilled_rollups
from billing.reservations import booked_lines, resale_lines, resale_split, resales_record, reserved_months
from billing.services.bank.grants import grant_create
from billing.services.fapiao import fapiao_void_check
from billing.services.ledger import (
    Credit,
    NewEntry,
    Purpose,
    account_for,
    accounts_for,
    entries_post,
    entry_reverse,
)
from billing.services.payments import attempts_settle, orders_hold_release, payments_give_back
from billing.voucher_credits import redeem_vouchers, reverse_vouchers
from core.exceptions import ConflictError
from core.locks import advisory_lock
from core.money import format_yuan, share
from marketplace.models import CapacityDeposit
from organizations.models import AuditEvent, Organization
from organizations.services import audit_record

logger = logging.getLogger(__name__)

Status = Invoice.Status
Method = Invoice.CollectionMethod
VOIDED_KINDS = ("invoice.finalized", "invoice.voucher_credit", "invoice.bank_credit")


def invoice_for_period(*, buyer: Organization, at: datetime) -> Invoice:
    """The buyer's invoice for the month ``at`` falls in, made as a draft on first use."""
    start, end = month_of(at)
    invoice, _ = Invoice.objects.get_or_create(buyer=buyer, period_start=start, defaults={"period_end": end})
    return invoice


def draft_lines(invoice: Invoice) -> list[RatedLine]:
    """A draft's lines, rated live from the usage so far: the buyer watches it grow."""
    rollups = unbilled_rollups(
        buyer_id=invoice.buyer_id, period_start=invoice.period_start, period_end=invoice.period_end
    )
    usage = resale_lines(rate(rollups, period_start=invoice.period_start))
    return usage + booked_lines(
        buyer_id=invoice.buyer_id, period_start=invoice.period_start, period_end=invoice.period_end
    )


def _take_numbers(at: datetime, count: int) -> list[str]:
    """The year's next ``count`` numbers. The sequence row stays locked until commit: numbers have no gaps."""
    year = local_year(at)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_invoicesequence (year, last) VALUES (%s, %s)"
            " ON CONFLICT (year) DO UPDATE SET last = billing_invoicesequence.last + EXCLUDED.last RETURNING last",
            [year, count],
        )
        (last,) = cursor.fetchone()
    return [f"CG-{year}-{n:06d}" for n in range(last - count + 1, last + 1)]


@dataclass(frozen=True)
class ProviderTotals:
    """A provider's part of an invoice: its lines' gross (tax-inclusive), their VAT, the platform's commission."""

    gross: int
    tax: int
    commission: int

    def __add__(self, other: "ProviderTotals") -> "ProviderTotals":
        return ProviderTotals(self.gross + other.gross, self.tax + other.tax, self.commission + other.commission)


def _accrue_statements(period: tuple[datetime, datetime], by_provider: dict[Any, ProviderTotals], sign: int) -> None:
    """Add (or with ``sign`` -1 take back) each provider's gross, tax and commission for the period."""
    period_start, period_end = period
    for provider_id in sorted(by_provider, key=str):  # locks in a fixed order
        totals = by_provider[provider_id]
        changes = {
            "gross": F("gross") + sign * totals.gross,
            "commission": F("commission") + sign * totals.commission,
            "net": F("net") + sign * (totals.gross - totals.commission),
            "tax": F("tax") + sign * totals.tax,
        }
        statement = ProviderStatement.objects.filter(provider_id=provider_id, period_start=period_start)
        if not statement.update(**changes):
            ProviderStatement.objects.get_or_create(
                provider_id=provider_id, period_start=period_start, defaults={"period_end": period_end}
            )
            statement.update(**changes)


def _provider_totals(lines: list[InvoiceLine]) -> dict[Any, ProviderTotals]:
    """Per provider: gross, VAT and the platform's commission (one rounding per provider and invoice)."""
    gross: dict[Any, int] = defaultdict(int)
    tax: dict[Any, int] = defaultdict(int)
    for line in lines:
        # The provider was owed its share of a rejected claim's line when the usage was billed, and is
        # paid for a resold card-hour by the reservation that booked it.
        if line.kind not in (InvoiceLine.Kind.CLAIM_REJECTED, InvoiceLine.Kind.RESALE):
            gross[line.provider_id] += line.amount
            tax[line.provider_id] += line.tax
    return {
        provider: ProviderTotals(amount, tax[provider], share(amount, settings.PLATFORM_COMMISSION_RATE)[0])
        for provider, amount in gross.items()
    }


@dataclass(frozen=True)
class _Books:
    """The accounts a batch of invoices posts to, made (if new) before anything is posted."""

    receivable: dict[Any, Account]  # by buyer
    payable: dict[Any, Account]  # by provider
    revenue: Account
    vat: Account
    rebill: dict[Any, Account]  # by buyer, of those billed an adjustment
    deposits: Account  # resale revenue owed to depositors, until granted as bank credit

    @classmethod
    def of(cls, drafts: list[Invoice], lines: list[InvoiceLine]) -> "_Books":
        rebilled = [line.invoice.buyer_id for line in lines if line.kind == InvoiceLine.Kind.CLAIM_REJECTED]
        return cls(
            receivable=accounts_for(purpose=Purpose.BUYER_RECEIVABLE, organization_ids=[i.buyer_id for i in drafts]),
            payable=accounts_for(purpose=Purpose.PROVIDER_PAYABLE, organization_ids=[i.provider_id for i in lines]),
            revenue=account_for(purpose=Purpose.PLATFORM_REVENUE),
            vat=account_for(purpose=Purpose.VAT_PAYABLE),
            rebill=accounts_for(purpose=Purpose.CLAIM_REBILL, organization_ids=rebilled) if rebilled else {},
            deposits=account_for(purpose=Purpose.DEPOSIT_PAYABLE),
        )


def _usage_entry(
    invoice: Invoice,
    by_provider: dict[Any, ProviderTotals],
    rebilled: int,
    books: _Books,
    now: datetime,
    resold: tuple[int, int] = (0, 0),
) -> NewEntry:
    """The buyer owes the subtotal; each provider is owed its lines less the commission; the platform,
    the seller on the invoice, owes the tax office the invoice's VAT and keeps the rest of the commission;
    rejected voucher claim lines billed back clear the buyer's claim rebill account; resale lines are
    the platform's share and the depositors' credit (``billing.reservations``)."""
    legs = [(books.receivable[invoice.buyer_id], invoice.subtotal)]
    platform, credit = resold
    if platform:
        legs.append((books.revenue, -platform))
    if credit:
        legs.append((books.deposits, -credit))
    for provider_id in sorted(by_provider, key=str):
        totals = by_provider[provider_id]
        legs.append((books.payable[provider_id], -(totals.gross - totals.commission)))
        legs.append((books.revenue, -totals.commission))
    legs.append((books.vat, -invoice.tax))
    legs.append((books.revenue, invoice.tax))
    if rebilled:
        legs.append((books.rebill[invoice.buyer_id], -rebilled))
    return NewEntry(
        kind="invoice.finalized",
        description=f"Usage of {invoice.period_start:%Y-%m} for {invoice.buyer.slug}",
        reference=invoice.reference,
        legs=_merge(legs),
        at=now,
    )


def _apply_credits(invoice: Invoice, lines: list[InvoiceLine], books: _Books, now: datetime) -> list[NewEntry]:
    """Vouchers, then compute-bank credits, pay what they can of the subtotal; the rest is due."""
    invoice.amount_due = invoice.subtotal
    entries = []
    for credit in redeem_vouchers(invoice=invoice, lines=lines, remaining=invoice.amount_due, now=now):
        entries += _book_credit(invoice, credit, "voucher_credit", books, now)
    for credit in pay_from_bank(invoice=invoice, remaining=invoice.amount_due, now=now):
        entries += _book_credit(invoice, credit, "bank_credit", books, now)
    return entries


def _book_credit(invoice: Invoice, credit: Credit, field: str, books: _Books, now: datetime) -> list[NewEntry]:
    """Take what ``credit`` pays off what the invoice still owes; the entry that records it."""
    amount = min(credit.amount, invoice.amount_due)
    if amount <= 0:
        return []
    setattr(invoice, field, getattr(invoice, field) + amount)
    invoice.amount_due -= amount
    return [
        NewEntry(
            kind=f"invoice.{field}",
            description=credit.description,
            reference=invoice.reference,
            legs=[(credit.account, amount), (books.receivable[invoice.buyer_id], -amount)],
            at=now,
        )
    ]


@transaction.atomic
def invoice_finalize(*, invoice_id: Any, now: datetime | None = None) -> Invoice:
    """Finalize a draft whose period is over; a finalized invoice is returned as it is."""
    now = now or timezone.now()
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if invoice.status == Status.DRAFT and invoice.period_end > now:
        raise ConflictError(gettext("The period of this invoice is still open."), code="period_open")
    invoices_finalize(invoice_ids=[invoice.pk], now=now)
    invoice.refresh_from_db()
    return invoice


_FINALIZED_FIELDS = [
    "subtotal",
    "voucher_credit",
    "bank_credit",
    "amount_due",
    "tax",
    "number",
    "status",
    "finalized_at",
    "paid_at",
    "next_payment_attempt_at",
    "hold_reason",
]


@transaction.atomic
def invoices_finalize(*, invoice_ids: Sequence[Any], now: datetime | None = None) -> int:
    """Finalize those of these invoices that are drafts of a closed period, together,
    in a few statements (month-end settles thousands); returns how many it finalized.

    One invoice never keeps the rest of its batch in draft: if the batch fails, each
    invoice is finalized on its own, and one that fails alone is set aside (left a draft with its reason,
    logged, counted in ``grid_invoices_set_aside_total``) for an operator to look at.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            return _finalize_together(invoice_ids, now)
    except Exception as error:  # any failure: find the invoice it belongs to below
        if len(invoice_ids) == 1:
            _set_aside(invoice_ids[0], error)
            return 0
        logger.warning("finalizing a batch failed; finalizing its invoices one by one", exc_info=True)
    finalized = 0
    for invoice_id in invoice_ids:
        try:
            with transaction.atomic():
                finalized += _finalize_together([invoice_id], now)
        except Exception as error:  # noqa: BLE001 - logged by _set_aside; the rest of the batch goes on
            _set_aside(invoice_id, error)
    return finalized


def _set_aside(invoice_id: Any, error: Exception) -> None:
    """Leave the invoice a draft with its reason (``reconcile`` and the operator's dashboard list it)."""
    reason = f"finalizing it failed: {type(error).__name__}: {error}"[:500]
    Invoice.objects.filter(pk=invoice_id, status=Status.DRAFT).update(hold_reason=reason)
    logger.error("invoice set aside: finalizing it failed", extra={"invoice": str(invoice_id)}, exc_info=True)
    count_on_commit(INVOICES_SET_ASIDE)


def _finalize_together(invoice_ids: Sequence[Any], now: datetime) -> int:
    """Finalize these invoices in a few statements. The work that holds locks other workers
    wait for (the providers' statements and the year's invoice numbers) comes last, just
    before commit."""
    drafts = list(
        Invoice.objects.select_for_update(of=("self",))
        .select_related("buyer")
        .filter(pk__in=invoice_ids, status=Status.DRAFT, period_end__lte=now)
        .order_by("pk")
    )
    if not drafts:
        return 0
    # Locked in id order; paid oldest first, so that which month a buyer's vouchers and credit pay
    # first is the calendar's choice, not the ids'.
    drafts.sort(key=lambda invoice: (invoice.period_start, str(invoice.pk)))
    unbilled = rate_unbilled(invoices=drafts)
    for invoice in drafts:
        found = unbilled[invoice.pk]
        found.lines = resale_lines(found.lines) + booked_lines(
            buyer_id=invoice.buyer_id, period_start=invoice.period_start, period_end=invoice.period_end
        )
    drafts = [
        invoice
        for invoice in drafts
        if _all_priced(invoice, unbilled[invoice.pk].unpriced)
        and _owes_nothing_negative(invoice, unbilled[invoice.pk].lines)
    ]
    if not drafts:
        return 0
    late_rows_bill(rollup_ids=[row for invoice in drafts for row in unbilled[invoice.pk].late_rows])
    lines = {
        invoice.pk: [
            line.as_invoice_line(invoice) for line in unbilled[invoice.pk].lines if line.amount or line.quantity
        ]
        for invoice in drafts
    }
    adjustments = _adjustments_bill(drafts, lines)
    all_lines = InvoiceLine.objects.bulk_create([line for invoice_lines in lines.values() for line in invoice_lines])
    InvoiceAdjustment.objects.bulk_update(adjustments, ["invoice"])
    books = _Books.of(drafts, all_lines)

    entries = []
    statements: dict[tuple[datetime, datetime], dict[Any, ProviderTotals]] = defaultdict(dict)
    buyer_ids = {invoice.buyer_id for invoice in drafts}
    banks_lock(buyer_ids=buyer_ids)  # in primary-key order, before credit is drawn invoice by invoice
    for invoice in drafts:
        invoice.subtotal = sum(line.amount for line in lines[invoice.pk])
        invoice.tax = sum(line.tax for line in lines[invoice.pk])
        by_provider = _provider_totals(lines[invoice.pk])
        rebilled = sum(line.amount for line in lines[invoice.pk] if line.kind == InvoiceLine.Kind.CLAIM_REJECTED)
        resold = _resold(lines[invoice.pk])
        entries.append(_usage_entry(invoice, by_provider, rebilled, books, now, resold))
        entries += _apply_credits(invoice, lines[invoice.pk], books, now)
        accrued = statements[invoice.period_start, invoice.period_end]
        for provider_id, totals in by_provider.items():
            accrued[provider_id] = accrued.get(provider_id, ProviderTotals(0, 0, 0)) + totals
        invoice.finalized_at, invoice.hold_reason = now, ""
        invoice.status = Status.FINALIZED if invoice.amount_due else Status.PAID
        invoice.next_payment_attempt_at = now if invoice.amount_due else None
        invoice.paid_at = None if invoice.amount_due else now
    entries_post(entries=entries)
    resales_credit(resales=resales_record(lines=all_lines, now=now), now=now)

    for period in sorted(statements):
        _accrue_statements(period, statements[period], sign=1)
    for invoice, number in zip(drafts, _take_numbers(now, len(drafts)), strict=True):
        invoice.number = number
    Invoice.objects.bulk_update(drafts, _FINALIZED_FIELDS)
    # Once the invoices no longer count as pending usage: what a draw left is what the buyer has.
    banks_review(buyer_ids={invoice.buyer_id for invoice in drafts if invoice.bank_credit}, now=now)
    count_on_commit(INVOICES_FINALIZED, len(drafts))

    due = [invoice.pk for invoice in drafts if invoice.amount_due and invoice.collection_method == Method.STRIPE]
    if due:
        # Collection is due now (next_payment_attempt_at): if the broker does not take these tasks,
        # the next payments_collect_due run (beat) finds the invoices.
        transaction.on_commit(lambda: _queue_collection(due), robust=True)
    for invoice in drafts:
        logger.info(
            "invoice finalized", extra={"invoice": str(invoice.pk), "number": invoice.number, "due": invoice.amount_due}
        )
    return len(drafts)


def _resold(lines: list[InvoiceLine]) -> tuple[int, int]:
    """The platform's share and the depositors' credit of an invoice's resale lines, split line by line."""
    splits = [resale_split(line.amount) for line in lines if line.kind == InvoiceLine.Kind.RESALE]
    return sum(platform for platform, _ in splits), sum(credit for _, credit in splits)


def resales_credit(*, resales: list[DepositResale], now: datetime) -> None:
    """Each resale's credit granted to its depositor's bank, once: from the depositors' payable."""
    depositors = dict(
        CapacityDeposit.objects.filter(pk__in={r.deposit_id for r in resales}).values_list("pk", "depositor_id")
    )
    organizations = Organization.objects.in_bulk({depositors[r.deposit_id] for r in resales})
    for resale in sorted(resales, key=lambda r: (str(depositors[r.deposit_id]), r.pk)):
        if resale.credit <= 0:
            continue
        resale.grant = grant_create(
            buyer=organizations[depositors[resale.deposit_id]],
            source=CreditGrant.Source.CAPACITY_DEPOSIT,
            amount=resale.credit,
            by="system",
            note=f"{resale.card_hours.normalize():f} deposited card-hours resold",
            reference=f"resale:{resale.line_id}",
            offset=Purpose.DEPOSIT_PAYABLE,
            now=now,
        )
        DepositResale.objects.filter(pk=resale.pk).update(grant=resale.grant)


def _adjustments_bill(drafts: list[Invoice], lines: dict[Any, list[InvoiceLine]]) -> list[InvoiceAdjustment]:
    """Each buyer's adjustments not billed yet go on its latest invoice of the batch, as lines of their
    own (locked in primary-key order: an adjustment is billed once)."""
    latest = {invoice.buyer_id: invoice for invoice in drafts}  # drafts are sorted oldest first
    adjustments = list(
        InvoiceAdjustment.objects.select_for_update()
        .select_related("source_line")
        .filter(buyer_id__in=list(latest), invoice__isnull=True)
        .order_by("pk")
    )
    for adjustment in adjustments:
        adjustment.invoice = latest[adjustment.buyer_id]
        lines[adjustment.invoice.pk].append(adjustment.as_invoice_line(adjustment.invoice))
    return adjustments


def _all_priced(invoice: Invoice, unpriced: list[dict[str, Any]]) -> bool:
    """An invoice with usage that has no price (rollup rows an earlier release stored without
    one) is set aside as a draft, with its reason and an error logged, rather than finalized
    without that usage: ``manage.py rebuild_usage_rollups`` prices it, and the next run of
    month-end finalizes the invoice. ``reconcile`` lists it meanwhile."""
    if not unpriced:
        return True
    totals: dict[str, Any] = defaultdict(int)
    for row in unpriced:
        totals[row["metric"]] += row["unbilled"]
    quantities = ", ".join(f"{format(total.normalize(), 'f')} {metric}" for metric, total in sorted(totals.items()))
    leases = sorted({str(row["lease_id"]) for row in unpriced})
    invoice.hold_reason = (
        f"usage without a price: {quantities} of lease {', '.join(leases)}; "
        "run manage.py rebuild_usage_rollups, then finalize again"
    )[:500]
    Invoice.objects.filter(pk=invoice.pk).update(hold_reason=invoice.hold_reason)
    logger.error(
        "invoice set aside: usage without a price",
        extra={"invoice": str(invoice.pk), "buyer": str(invoice.buyer_id), "reason": invoice.hold_reason},
    )
    count_on_commit(INVOICES_SET_ASIDE)
    return False


def _owes_nothing_negative(invoice: Invoice, lines: list[RatedLine]) -> bool:
    """An invoice whose lines sum below zero (a late correction larger than the usage) stays a
    draft, holding its corrections, until usage covers them: an invoice never owes the buyer."""
    total = sum(line.amount for line in lines)
    if total < 0:
        logger.warning(
            "invoice left a draft: its lines sum below zero", extra={"invoice": str(invoice.pk), "total": total}
        )
    return total >= 0


def _merge(legs: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """One leg per account."""
    totals: dict[Any, int] = defaultdict(int)
    accounts = {}
    for account, amount in legs:
        totals[account.pk] += amount
        accounts[account.pk] = account
    return [(accounts[pk], amount) for pk, amount in totals.items()]


def _queue_collection(invoice_ids: list[Any]) -> None:
    from billing.tasks import payment_collect

    for invoice_id in invoice_ids:
        payment_collect.delay(str(invoice_id))


VOIDABLE = (Status.FINALIZED, Status.PAID, Status.UNCOLLECTIBLE)


def invoice_void(*, invoice_id: Any, by: str, reason: str = "", now: datetime | None = None) -> Invoice:
    """Void a finalized or paid invoice: its open PaymentIntents are canceled first (a charge
    Stripe already made is booked), then it is voided (``_void``). While a collection run talks
    to Stripe about it, or Stripe is still processing a charge, the answer is 409 ``payment_in_flight``."""
    now = now or timezone.now()
    with advisory_lock(f"invoice-collect:{invoice_id}") as mine:  # the collection run's
        if not mine:
            raise ConflictError(_IN_FLIGHT, code="payment_in_flight")
        invoice = Invoice.objects.filter(pk=invoice_id, status__in=VOIDABLE).first()
        if invoice is not None:
            fapiao_void_check(invoice=invoice, by=by, now=now, only_check=True)  # before Stripe is touched
            attempts_settle(invoice_id=invoice_id, now=now)
        return _void(invoice_id=invoice_id, by=by, reason=reason, now=now)


_IN_FLIGHT = "A card payment of this invoice is in flight at Stripe; try again in a few minutes."


@transaction.atomic
def _void(*, invoice_id: Any, by: str, reason: str, now: datetime) -> Invoice:
    """Every entry the invoice posted is reversed, statements taken back, vouchers and credits
    returned; what it received is given back (``payments_give_back``)."""
    # The buyer takes turns with an issuer's review of a claim of this invoice (``settlements``); its
    # bank is locked before the vouchers and the statements, as finalization locks them (a month end
    # finalizing the buyer's next invoice and this void took them the other way round and deadlocked).
    invoice = invoice_lock(invoice_id=invoice_id)
    banks_lock(buyer_ids=[invoice.buyer_id])
    if invoice.status not in VOIDABLE:
        raise ConflictError(
            gettext("A %(status)s invoice cannot be voided.") % {"status": invoice.status}, code="invoice_not_voidable"
        )
    if invoice.attempts.filter(status=PaymentAttempt.Status.PENDING).exists():
        raise ConflictError(_IN_FLIGHT, code="payment_in_flight")
    # An issued fapiao stops the void until its red-letter reversal is recorded; a requested one is cancelled.
    fapiao_void_check(invoice=invoice, by=by, now=now)
    if DepositResale.objects.filter(line__invoice=invoice).exists():
        # Its resale lines credited depositors' banks, credit they may have spent: not taken back here.
        raise ConflictError(
            gettext(
                "This invoice bills resold deposited card-hours whose depositors were credited; it cannot be voided."
            ),
            code="resale_credited",
        )
    # What finalizing posted is reversed; payments stay booked and are refunded, so that the
    # buyer is owed what it paid until the refund goes out.
    billed = JournalEntry.objects.filter(
        reference=invoice.reference, kind__in=VOIDED_KINDS, reverses__isnull=True, reversed_by__isnull=True
    )
    for entry in billed.order_by("posted_at"):
        entry_reverse(entry=entry, reason=reason or f"invoice {invoice.number} voided", at=now)
    reverse_vouchers(invoice=invoice, now=now)
    # Checked once the vouchers' claim of the invoice is locked (by reverse_vouchers), so that an
    # issuer's review committing meanwhile is seen: its issuer rejected a voucher line of it, billed
    # back to the buyer, and a void would give the buyer the voucher's share twice.
    if InvoiceAdjustment.objects.filter(source_line__invoice=invoice).exists():
        raise ConflictError(
            gettext(
                "A voucher claim line of this invoice was rejected and billed back to the buyer; it cannot be voided."
            ),
            code="claim_line_rejected",
        )
    give_back_to_bank(invoice=invoice, now=now)
    # Last, as finalization accrues them: other invoices' transactions wait on these rows.
    _accrue_statements((invoice.period_start, invoice.period_end), _provider_totals(list(invoice.lines.all())), sign=-1)
    invoice.adjustments.update(invoice=None)  # billed again by the buyer's next invoice
    invoice.status, invoice.voided_at, invoice.voided_by = Status.VOID, now, by
    invoice.next_payment_attempt_at = None
    invoice.save(update_fields=["status", "voided_at", "voided_by", "next_payment_attempt_at"])
    orders_hold_release(invoice.buyer)  # an uncollectible invoice voided blocks no more orders
    refunds = payments_give_back(invoice=invoice, now=now)
    audit_record(
        actor=by,
        action=AuditEvent.Action.INVOICE_VOID,
        target=invoice,
        organization=invoice.buyer,
        summary={
            "number": invoice.number,
            "amount_due": format_yuan(invoice.amount_due),
            "amount_paid": format_yuan(invoice.amount_paid),
            "refunds": [{"amount": format_yuan(r.amount), "method": r.method} for r in refunds],
            "reason": reason,
        },
    )
    return invoice


def invoices_due_for_finalizing(*, now: datetime) -> list[Any]:
    """The drafts of months closed for longer than the grace for late usage.

    Drafts are made as usage is rolled up (``invoices_for_usage``), late usage of a
    finalized month included, so this reads invoices, not the usage.
    """
    closed_before = month_of(now - timedelta(hours=settings.BILLING_FINALIZE_GRACE_HOURS))[0]
    # A reserved booking bills its months whether it was used or not: their drafts are made here.
    for buyer_id, at in reserved_months(closed_before=closed_before):
        invoice_for_period(buyer=Organization(pk=buyer_id), at=at)
    return list(
        Invoice.objects.filter(status=Status.DRAFT, period_end__lte=closed_before)
        .order_by("period_start", "pk")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def invoice_adjustment_add(
    *, buyer_id: Any, source_line_id: Any, reference: str, amount: int, description: str, now: datetime
) -> InvoiceAdjustment:
    """Bill ``amount`` to the buyer on its next invoice, once per ``reference`` (a second call
    returns the first's row). The buyer's invoice of this month is made if it has none, so that
    month-end finalizes it even without usage."""
    adjustment, _ = InvoiceAdjustment.objects.get_or_create(
        reference=reference,
        defaults={
            "buyer_id": buyer_id,
            "source_line_id": source_line_id,
            "amount": amount,
            "description": description[:300],
            "created_at": now,
        },
    )
    invoice_for_period(buyer=Organization(pk=buyer_id), at=now)
    return adjustment
