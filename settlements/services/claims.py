"""The platform's subsidy claims on voucher issuers: built per program and month, reviewed by
the issuer, paid by bank transfer.

A claim of month M holds every redemption redeemed in M (Asia/Shanghai): a month's claim is
complete once the month is over. A line the issuer rejects goes back to its program's budget,
never to its voucher (``vouchers.services.redemptions_reject``: the voucher cannot spend it
again), and is billed to the company on its next invoice ("voucher claim rejected"); its ledger
entry moves the amount from the issuer's voucher receivable to the buyer's claim rebill account,
which the invoice clears.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext

from billing.periods import month_of
from billing.services.invoices import invoice_adjustment_add
from billing.services.ledger import NewEntry, Purpose, account_for, accounts_for, entries_post
from core.exceptions import ApplicationError, ConflictError, NotFoundError, RuleViolation
from core.money import format_yuan
from core.timezones import local_zone
from organizations.models import Organization
from organizations.services import audit_record
from settlements.models import ClaimLine, ClaimPayment, SubsidyClaim
from vouchers.models import Redemption, VoucherProgram
from vouchers.services import redemptions_reject

Line = ClaimLine.Status


def claims_build(*, at: datetime, now: datetime | None = None) -> list[SubsidyClaim]:
    """The claims of the month ``at`` falls in, one per program with redemptions, each made (or
    completed) once the month is over; building again adds nothing."""
    now = now or timezone.now()
    start, end = month_of(at)
    if end > now:
        raise RuleViolation(gettext("A month's claims are built once the month is over."), code="period_open")
    program_ids = (
        Redemption.objects.filter(redeemed_at__gte=start, redeemed_at__lt=end, claim_line__isnull=True)
        .order_by()
        .values_list("program_id", flat=True)
        .distinct()
    )
    return [
        _claim_build(program_id=program_id, start=start, end=end, now=now)
        for program_id in sorted(set(program_ids), key=str)
    ]


@transaction.atomic
def _claim_build(*, program_id: Any, start: datetime, end: datetime, now: datetime) -> SubsidyClaim:
    program = VoucherProgram.objects.select_for_update(no_key=True).get(pk=program_id)  # one build at a time
    claim, _ = SubsidyClaim.objects.get_or_create(
        program=program,
        period_start=start,
        defaults={
            "number": f"CL-{start.astimezone(local_zone()):%Y%m}-{str(program.pk)[:8].upper()}",
            "issuer_id": program.issuer_id,
            "period_end": end,
            "created_at": now,
        },
    )
    redemptions = Redemption.objects.filter(
        program=program, redeemed_at__gte=start, redeemed_at__lt=end, claim_line__isnull=True
    ).select_related("reversal")
    ClaimLine.objects.bulk_create(
        [
            ClaimLine(
                claim=claim,
                redemption=redemption,
                amount=redemption.amount,
                status=Line.WITHDRAWN if hasattr(redemption, "reversal") else Line.CLAIMED,
            )
            for redemption in redemptions.order_by("pk")
        ]
    )
    _totals(claim)
    return claim


def _totals(claim: SubsidyClaim) -> None:
    sums = {
        status: int(total or 0)
        for status, total in claim.lines.values_list("status").annotate(total=Sum("amount")).order_by()
    }
    claim.withdrawn = sums.get(Line.WITHDRAWN, 0)
    claim.approved = sums.get(Line.APPROVED, 0)
    claim.rejected = sums.get(Line.REJECTED, 0)
    claim.claimed = sum(sums.values()) - claim.withdrawn
    claim.save(update_fields=["withdrawn", "approved", "rejected", "claimed"])


def _lock_claim(claim_id: Any) -> SubsidyClaim:
    claim = SubsidyClaim.objects.select_for_update().filter(pk=claim_id).first()
    if claim is None:
        raise NotFoundError(gettext("No such claim."))
    return claim


@transaction.atomic
def claim_review(
    *, claim_id: Any, approve_all: bool, rejections: Sequence[dict[str, Any]], by: str, now: datetime | None = None
) -> SubsidyClaim:
    """The issuer's review, once: every line approved but those rejected, each with a reason code.
    A line whose invoice was voided meanwhile is withdrawn, neither approved nor billed back."""
    now = now or timezone.now()
    claim = _lock_claim(claim_id)
    if claim.status != SubsidyClaim.Status.SUBMITTED:
        raise ConflictError(gettext("This claim has been reviewed."), code="claim_already_reviewed")
    if approve_all == bool(rejections):
        raise ApplicationError(
            gettext("Send approve_all true, or the lines you reject (every other line is approved)."),
            code="invalid_review",
            fields={
                "approve_all": [
                    {"code": "invalid_review", "message": "Either approve_all or reject, not both nor neither."}
                ]
            },
        )
    lines = {str(line.pk): line for line in claim.lines.select_for_update(of=("self",)).select_related("redemption")}
    rejected = {str(item["line"]): item for item in rejections}
    unknown = sorted(set(rejected) - set(lines))
    if unknown:
        raise RuleViolation(
            gettext("Lines not on this claim: %(join)s.") % {"join": ", ".join(unknown)}, code="unknown_line"
        )
    # The companies billed back are locked before the vouchers' side, in primary-key order, as a
    # void locks its buyer before its vouchers: a void and a review at once take turns.
    buyers = sorted({lines[pk].redemption.buyer_id for pk in rejected}, key=str)
    list(Organization.objects.select_for_update(no_key=True).filter(pk__in=buyers).order_by("pk"))
    given_back = {
        r.pk for r in redemptions_reject(redemption_ids=[lines[pk].redemption_id for pk in sorted(rejected)], at=now)
    }
    reversed_before = set(
        Redemption.objects.filter(pk__in=[line.redemption_id for line in lines.values()], reversal__isnull=False)
        .exclude(pk__in=given_back)
        .values_list("pk", flat=True)
    )
    billed_back = []
    for pk, line in lines.items():
        if line.redemption_id in reversed_before:
            line.status = Line.WITHDRAWN
        elif pk in rejected:
            line.status, line.reason_code = Line.REJECTED, rejected[pk]["reason_code"]
            line.reason = rejected[pk].get("reason", "")[:300]
            billed_back.append(line)
        else:
            line.status = Line.APPROVED
    ClaimLine.objects.bulk_update(list(lines.values()), ["status", "reason_code", "reason"])
    _bill_back(claim, billed_back, now)
    _totals(claim)
    claim.reviewed_at, claim.reviewed_by = now, by
    claim.due_at = now + timedelta(days=settings.CLAIM_PAYMENT_DAYS)
    claim.status = SubsidyClaim.Status.REVIEWED if claim.approved else SubsidyClaim.Status.PAID
    claim.save(update_fields=["reviewed_at", "reviewed_by", "due_at", "status"])
    audit_record(
        actor=by,
        action="subsidy_claim.review",
        target=claim,
        organization=claim.issuer,
        summary={
            "number": claim.number,
            "approved": format_yuan(claim.approved),
            "rejected": [
                {"line": str(line.pk), "amount": format_yuan(line.amount), "reason_code": line.reason_code}
                for line in billed_back
            ],
        },
    )
    return claim


def _bill_back(claim: SubsidyClaim, lines: list[ClaimLine], now: datetime) -> None:
    """Each rejected line: the issuer no longer owes it, the company does, on its next invoice."""
    if not lines:
        return
    receivable = account_for(purpose=Purpose.VOUCHER_RECEIVABLE, organization=Organization(pk=claim.issuer_id))
    rebill = accounts_for(purpose=Purpose.CLAIM_REBILL, organization_ids=[line.redemption.buyer_id for line in lines])
    entries = []
    for line in lines:
        redemption = line.redemption
        entries.append(
            NewEntry(
                kind="voucher.claim_rejected",
                description=f"Claim {claim.number}: line {line.pk} rejected ({line.reason_code})",
                reference=f"claim:{claim.pk}",
                legs=[(rebill[redemption.buyer_id], line.amount), (receivable, -line.amount)],
                at=now,
            )
        )
        invoice_adjustment_add(
            buyer_id=redemption.buyer_id,
            source_line_id=redemption.line_ref,
            reference=f"claim-line:{line.pk}",
            amount=line.amount,
            description=f"Voucher claim rejected ({claim.number}, {line.reason_code}): {line.reason}".strip(": "),
            now=now,
        )
    entries_post(entries=entries)


@transaction.atomic
def claim_payment_record(
    *, claim_id: Any, reference: str, amount: int, by: str, now: datetime | None = None
) -> SubsidyClaim:
    """An issuer's bank transfer against a reviewed claim: cash debited, its voucher receivable
    credited. Partial payments add up; more than is due is refused; a reference is recorded once."""
    now = now or timezone.now()
    claim = _lock_claim(claim_id)
    if claim.status == SubsidyClaim.Status.SUBMITTED:
        raise ConflictError(gettext("The issuer has not reviewed this claim yet."), code="claim_not_reviewed")
    if claim.payments.filter(reference=reference).exists():
        raise ConflictError(
            gettext("A payment with this reference is recorded on this claim."), code="payment_recorded"
        )
    if amount > claim.approved - claim.received:
        raise RuleViolation(
            gettext("Only %(format_yuan)s is due on this claim.")
            % {"format_yuan": format_yuan(claim.approved - claim.received)},
            code="overpayment",
        )
    ClaimPayment.objects.create(claim=claim, reference=reference, amount=amount, received_at=now, recorded_by=by)
    entries_post(
        entries=[
            NewEntry(
                kind="claim.payment",
                description=f"Claim {claim.number} paid by the issuer: {reference}",
                reference=f"claim:{claim.pk}",
                legs=[
                    (account_for(purpose=Purpose.CASH), amount),
                    (account_for(purpose=Purpose.VOUCHER_RECEIVABLE, organization=claim.issuer), -amount),
                ],
                at=now,
            )
        ]
    )
    claim.received += amount
    if claim.received == claim.approved:
        claim.status, claim.paid_at = SubsidyClaim.Status.PAID, now
    claim.save(update_fields=["received", "status", "paid_at"])
    audit_record(
        actor=by,
        action="subsidy_claim.payment",
        target=claim,
        organization=claim.issuer,
        summary={"number": claim.number, "reference": reference, "amount": format_yuan(amount)},
    )
    return claim
