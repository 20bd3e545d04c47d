"""Payout runs: each provider is paid the net of its collected invoices, once.

What a provider is owed per invoice is read from the ledger: the provider payable leg of the
invoice's ``invoice.finalized`` entry (its lines less the commission, rounded as finalizing
rounded it). A run pays, per provider, the items not paid yet (``PayoutItem``):

- ``share``: a paid (collected) invoice's net less the reserve (``PAYOUT_RESERVE_RATE``);
- ``reserve``: what the share held back, once the invoice's month is before the run's;
- ``clawback``: minus what was paid of an invoice voided since.

Invoices not collected (finalized, uncollectible) are held back until they are paid. A
provider owed less than ``PAYOUT_MINIMUM_FEN``, or without a payout account in effect, is
carried forward: its items stay unpaid for the next run.

Ledger: marking the run sent moves each line from the provider's payable to payouts in transit
(``payout.sent``); a line paid moves it from payouts in transit to cash (``payout.paid``); a
line failed moves it back to payable (``payout.returned``) and frees its items.
"""

import csv
import hashlib
import io
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext

from billing.models import Account, Invoice, Leg, ProviderStatement
from billing.periods import month_of
from billing.services.ledger import NewEntry, Purpose, account_for, accounts_for, entries_post
from core.exceptions import ConflictError, NotFoundError, RuleViolation
from core.money import format_yuan, share
from core.timezones import local_zone
from organizations.models import Organization
from organizations.services import audit_record
from settlements.models import PayoutAccount, PayoutItem, PayoutLine, PayoutRun
from settlements.services.accounts import payout_account_current

Kind = PayoutItem.Kind
RUN_LOCK = "settlements.payout_run"

# The bank batch (docs/payouts.md): a header, one row per line, a trailer with the count and total.
BATCH_COLUMNS = [
    "record_type",
    "line_number",
    "reference",
    "payee_account_number",
    "payee_account_name",
    "payee_bank",
    "payee_branch",
    "amount",
    "currency",
    "purpose",
]
RETURN_COLUMNS = ["reference", "status", "reason"]


def _invoice_nets(period_end: datetime) -> dict[tuple[Any, str], int]:
    """(provider, invoice id) -> the provider's net on each finalized invoice of a month before ``period_end``."""
    nets: dict[tuple[Any, str], int] = defaultdict(int)
    legs = Leg.objects.filter(
        account__purpose=Account.Purpose.PROVIDER_PAYABLE, entry__kind="invoice.finalized", entry__reverses__isnull=True
    ).values_list("account__organization_id", "entry__reference", "amount")
    for provider_id, reference, amount in legs:
        nets[(provider_id, reference.removeprefix("invoice:"))] -= amount
    in_time = {
        str(pk)
        for pk in Invoice.objects.filter(pk__in={i for _, i in nets}, period_start__lt=period_end).values_list(
            "pk", flat=True
        )
    }
    return {key: net for key, net in nets.items() if key[1] in in_time}


def _due_items(run: PayoutRun) -> dict[Any, list[PayoutItem]]:
    """The items each provider is owed by this run (unsaved, without their line)."""
    nets = _invoice_nets(run.period_end)
    invoices = {
        str(pk): (status, start)
        for pk, status, start in Invoice.objects.filter(pk__in={i for _, i in nets}).values_list(
            "pk", "status", "period_start"
        )
    }
    paid: dict[tuple[Any, str], dict[str, int]] = defaultdict(dict)
    for provider_id, paid_invoice, kind, amount in PayoutItem.objects.filter(active=True).values_list(
        "provider_id", "invoice_id", "kind", "amount"
    ):
        paid[(provider_id, str(paid_invoice))][kind] = amount
    statements = {
        (provider_id, start): pk
        for pk, provider_id, start in ProviderStatement.objects.values_list("pk", "provider_id", "period_start")
    }
    due: dict[Any, list[PayoutItem]] = defaultdict(list)
    for (provider_id, invoice_id), net in sorted(nets.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        status, start = invoices[invoice_id]
        done = paid.get((provider_id, invoice_id), {})
        amounts: dict[str, int] = {}
        if status == Invoice.Status.PAID:
            if Kind.SHARE not in done:
                reserve = share(net, Decimal(run.reserve_rate))[0]
                amounts[Kind.SHARE] = net - reserve
                done = {**done, Kind.SHARE: net - reserve}
            if Kind.RESERVE not in done and start < run.period_start:
                amounts[Kind.RESERVE] = net - done[Kind.SHARE]
        elif status == Invoice.Status.VOID and Kind.CLAWBACK not in done:
            amounts[Kind.CLAWBACK] = -(done.get(Kind.SHARE, 0) + done.get(Kind.RESERVE, 0))
        for kind, amount in amounts.items():
            if amount:
                due[provider_id].append(
                    PayoutItem(
                        provider_id=provider_id,
                        invoice_id=invoice_id,
                        statement_id=statements[(provider_id, start)],
                        kind=kind,
                        amount=amount,
                    )
                )
    return due


@transaction.atomic
def payout_run_create(*, at: datetime, by: str, now: datetime | None = None) -> PayoutRun:
    """Start the payout run of the month ``at`` falls in: one line per provider owed at least the
    minimum, with an account in effect. Runs are made one at a time (a transaction-scoped advisory
    lock), and a unique constraint keeps each item paid once: a retried or overlapping run finds
    nothing left to pay twice. With nothing to pay: 409 ``nothing_to_pay``, nothing made."""
    now = now or timezone.now()
    period_start, period_end = month_of(at)
    if period_start > now:
        raise RuleViolation(
            gettext("A payout run pays months that have begun; pick this month or earlier."), code="future_period"
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [RUN_LOCK])
    run = PayoutRun(
        period_start=period_start,
        period_end=period_end,
        minimum=settings.PAYOUT_MINIMUM_FEN,
        reserve_rate=settings.PAYOUT_RESERVE_RATE,
        created_by=by,
        created_at=now,
    )
    due = _due_items(run)
    lines: list[tuple[PayoutLine, list[PayoutItem]]] = []
    names = dict(Organization.objects.filter(pk__in=list(due)).values_list("pk", "slug"))
    for provider_id in sorted(due, key=str):
        items = due[provider_id]
        total = sum(item.amount for item in items)
        account = payout_account_current(provider=Organization(pk=provider_id), at=now)
        reason = None
        if total < run.minimum:
            reason = f"below the minimum of {format_yuan(run.minimum)}" if total > 0 else "nothing owed on balance"
        elif account is None:
            reason = "no payout account in effect"
        if reason:
            run.carried_forward.append({"provider": names[provider_id], "amount": format_yuan(total), "reason": reason})
            continue
        assert account is not None
        line = PayoutLine(run=run, number=len(lines) + 1, provider_id=provider_id, account=account, amount=total)
        lines.append((line, items))
    if not lines:
        raise ConflictError(
            gettext("Nothing is owed to any provider above the minimum with a payout account in effect."),
            code="nothing_to_pay",
            details={"carried_forward": run.carried_forward},
        )
    run.total = sum(line.amount for line, _ in lines)
    run.checksum = ""
    run.save(force_insert=True)
    PayoutLine.objects.bulk_create([line for line, _ in lines])
    for line, items in lines:
        for item in items:
            item.line = line
    PayoutItem.objects.bulk_create([item for _, items in lines for item in items])
    run.checksum = hashlib.sha256(payout_batch_csv(run).encode()).hexdigest()
    run.save(update_fields=["checksum"])
    audit_record(
        actor=by,
        action="payout_run.create",
        target=run,
        summary={
            "period": f"{run.period_start.astimezone(local_zone()):%Y-%m}",
            "lines": len(lines),
            "total": format_yuan(run.total),
            "checksum": run.checksum,
        },
    )
    return run


def payout_batch_csv(run: PayoutRun) -> str:
    """The bank batch, in the layout docs/payouts.md documents."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["H", "CG-PAYOUT", f"{run.period_start:%Y-%m}", str(run.pk), "", "", "", "", run.currency, ""])
    writer.writerow(BATCH_COLUMNS)
    lines = list(run.lines.select_related("account").order_by("number"))
    for line in lines:
        account: PayoutAccount = line.account
        writer.writerow(
            [
                "D",
                line.number,
                line.reference,
                account.account_number,
                account.account_name,
                account.bank_name,
                account.branch,
                format_yuan(line.amount),
                line.currency,
                f"Compute Grid payout {run.period_start:%Y-%m}",
            ]
        )
    writer.writerow(["T", len(lines), "", "", "", "", "", format_yuan(sum(x.amount for x in lines)), run.currency, ""])
    return out.getvalue()


def _lock_run(run_id: Any) -> PayoutRun:
    run = PayoutRun.objects.select_for_update().filter(pk=run_id).first()
    if run is None:
        raise NotFoundError(gettext("No such payout run."))
    return run


@transaction.atomic
def payout_run_send(*, run_id: Any, by: str, now: datetime | None = None) -> PayoutRun:
    """The batch went to the bank: each line's amount moves from the provider's payable to payouts in transit."""
    now = now or timezone.now()
    run = _lock_run(run_id)
    if run.status != PayoutRun.Status.PREPARED:
        raise ConflictError(
            gettext("This run is %(status)s: only a prepared run is sent.") % {"status": run.status},
            code="run_not_prepared",
        )
    lines = list(run.lines.order_by("number"))
    payable = accounts_for(purpose=Purpose.PROVIDER_PAYABLE, organization_ids=[line.provider_id for line in lines])
    transit = account_for(purpose=Purpose.PAYOUTS_IN_TRANSIT)
    entries_post(
        entries=[
            NewEntry(
                kind="payout.sent",
                description=f"Payout {line.reference} sent to the bank",
                reference=run.reference,
                legs=[(payable[line.provider_id], line.amount), (transit, -line.amount)],
                at=now,
            )
            for line in lines
        ]
    )
    run.lines.update(status=PayoutLine.Status.SENT)
    run.status, run.sent_at, run.sent_by = PayoutRun.Status.SENT, now, by
    run.save(update_fields=["status", "sent_at", "sent_by"])
    audit_record(actor=by, action="payout_run.send", target=run, summary={"total": format_yuan(run.total)})
    return run


@transaction.atomic
def payout_line_settle(
    *, run_id: Any, line_id: Any, paid: bool, by: str, reason: str = "", now: datetime | None = None
) -> PayoutLine:
    """The bank paid the line (payouts in transit to cash), or returned it (back to the provider's
    payable, its items freed for the next run). Only a sent line is settled, once."""
    now = now or timezone.now()
    run = _lock_run(run_id)
    line = PayoutLine.objects.select_for_update().filter(pk=line_id, run=run).first()
    if line is None:
        raise NotFoundError(gettext("No such line in this payout run."))
    if line.status != PayoutLine.Status.SENT:
        raise ConflictError(
            gettext("This line is %(status)s: only a sent line is settled.") % {"status": line.status},
            code="line_not_sent",
        )
    if not paid and not reason.strip():
        raise RuleViolation(gettext("A failed line needs the bank's reason."), code="reason_required")
    transit = account_for(purpose=Purpose.PAYOUTS_IN_TRANSIT)
    if paid:
        other, kind, line.status = account_for(purpose=Purpose.CASH), "payout.paid", PayoutLine.Status.PAID
    else:
        other = account_for(purpose=Purpose.PROVIDER_PAYABLE, organization=Organization(pk=line.provider_id))
        kind, line.status, line.failure_reason = "payout.returned", PayoutLine.Status.FAILED, reason.strip()[:300]
        line.items.update(active=False)
    entries_post(
        entries=[
            NewEntry(
                kind=kind,
                description=f"Payout {line.reference} {'paid' if paid else 'returned: ' + line.failure_reason}",
                reference=run.reference,
                legs=[(transit, line.amount), (other, -line.amount)],
                at=now,
            )
        ]
    )
    line.settled_at = now
    line.save(update_fields=["status", "failure_reason", "settled_at"])
    audit_record(
        actor=by,
        action="payout_line.settle",
        target=line,
        organization=Organization(pk=line.provider_id),
        summary={"reference": line.reference, "status": line.status, "reason": line.failure_reason},
    )
    if not run.lines.filter(status__in=[PayoutLine.Status.PENDING, PayoutLine.Status.SENT]).exists():
        run.status, run.settled_at = PayoutRun.Status.SETTLED, now
        run.save(update_fields=["status", "settled_at"])
    return line


def payout_return_file_apply(*, run_id: Any, content: str, by: str, now: datetime | None = None) -> list[PayoutLine]:
    """Apply a bank's return file (docs/payouts.md: ``reference,status,reason``; status ``PAID`` or
    ``FAILED``): every row is checked before any is applied, and lines already settled as the file
    says are left as they are, so uploading the same file twice changes nothing."""
    rows = list(csv.reader(io.StringIO(content.strip())))
    if not rows or [cell.strip().lower() for cell in rows[0]] != RETURN_COLUMNS:
        raise RuleViolation(
            gettext("The first row must be %(join)s.") % {"join": ",".join(RETURN_COLUMNS)}, code="invalid_return_file"
        )
    with transaction.atomic():
        run = _lock_run(run_id)
        lines = {line.reference: line for line in run.lines.all()}
        wanted = []
        for number, row in enumerate(rows[1:], start=2):
            if len(row) < 2 or len(row) > 3:
                raise RuleViolation(
                    gettext("Row %(number)s must have 2 or 3 cells.") % {"number": number}, code="invalid_return_file"
                )
            reference, status, reason = row[0].strip(), row[1].strip().upper(), (row[2] if len(row) > 2 else "")
            if reference not in lines or status not in ("PAID", "FAILED"):
                raise RuleViolation(
                    gettext("Row %(number)s: unknown reference %(reference)s or status %(status)s (PAID or FAILED).")
                    % {"number": number, "reference": f"{reference!r}", "status": f"{status!r}"},
                    code="invalid_return_file",
                )
            wanted.append((lines[reference], status == "PAID", reason))
        settled = []
        for line, paid, reason in wanted:
            already = PayoutLine.Status.PAID if paid else PayoutLine.Status.FAILED
            if line.status == already:
                continue
            settled.append(
                payout_line_settle(
                    run_id=run.pk, line_id=line.pk, paid=paid, by=by, reason=reason or "returned", now=now
                )
            )
        return settled
