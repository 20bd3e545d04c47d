"""Every write of vouchers: programs, issuing, revocation, redemption, reversal and expiry.

Locks, in the one order every writer here takes them: an invoice's claim (its
unique ``invoice_ref``), then programs, then vouchers, then yearly cap rows,
each kind in primary-key order. Rows are locked ``FOR NO KEY UPDATE``
(``no_key=True``): writers still exclude each other, but the foreign-key check
of a new redemption on its program (a key-share lock, taken at commit) never
waits for a revocation that holds the program.

Redemption takes no program lock: a program's budget was committed when its
vouchers were granted, so a voucher that pays at most its remaining value can
never pass the budget (and the database refuses a ``committed`` beyond it).
"""

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError, ConflictError, RuleViolation
from core.money import format_yuan
from organizations.models import AuditEvent, Organization
from organizations.services import audit_record, audit_record_many
from vouchers.allocation import CapKey, Grant, allocate, cap_year
from vouchers.charges import (
    ChargeLine,
    Ineligibility,
    LineOutcome,
    RedemptionLine,
    RedemptionResult,
    ReversalResult,
    VoucherReturn,
)
from vouchers.issuing import (
    MAX_VOUCHERS_PER_REQUEST,
    VoucherRequest,
    VouchersRefused,
    check_program_issuable,
    row_problems,
)
from vouchers.models import (
    LATE_INVOICE_GRACE,
    Claim,
    Redemption,
    Reversal,
    Voucher,
    VoucherProgram,
    YearlyCapUsage,
)
from vouchers.selectors import purses, redeemable_vouchers, related_providers

Status = VoucherProgram.Status
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: codes are read aloud and typed


def _bad(field: str, code: str, message: str) -> ApplicationError:
    return ApplicationError(message, code=code, fields={field: [{"code": code, "message": message}]})


# --- programs ------------------------------------------------------------------


@transaction.atomic
def program_create(
    *,
    issuer: Organization,
    name: str,
    budget: int,
    coverage_share: Decimal,
    per_company_yearly_cap: int,
    valid_until: datetime,
    valid_from: datetime | None = None,
    currency: str = "CNY",
    provinces: Sequence[str] = (),
    cities: Sequence[str] = (),
    sme_only: bool = False,
    hubs: Sequence[str] = (),
    gpu_models: Sequence[str] = (),
    workloads: Sequence[str] = (),
    providers: Sequence[Organization] = (),
    by: str,
    now: datetime | None = None,
) -> VoucherProgram:
    """An issuer (or an operator on its behalf) drafts a program; it grants nothing until opened."""
    now = now or timezone.now()
    valid_from = valid_from or now
    if issuer.kind != Organization.Kind.ISSUER:
        raise _bad(
            "issuer",
            "not_an_issuer",
            gettext("%(slug)s is a %(kind)s; only issuers run voucher programs.")
            % {"slug": issuer.slug, "kind": issuer.kind},
        )
    if budget <= 0:
        raise _bad("budget", "not_positive", gettext("The budget must be more than zero."))
    if per_company_yearly_cap <= 0:
        raise _bad("per_company_yearly_cap", "not_positive", gettext("The yearly cap must be more than zero."))
    if not coverage_share.is_finite() or not Decimal(0) < coverage_share <= Decimal(1):
        raise _bad("coverage_share", "out_of_range", gettext("The coverage share must be above 0 and at most 1."))
    if valid_until <= valid_from:
        raise _bad("valid_until", "ends_before_start", gettext("The program must end after it starts."))
    if valid_until <= now:
        raise _bad("valid_until", "in_past", gettext("The program would already be over."))
    not_providers = [provider.slug for provider in providers if provider.kind != Organization.Kind.PROVIDER]
    if not_providers:
        raise _bad(
            "providers", "not_a_provider", gettext("Not providers: %(join)s.") % {"join": ", ".join(not_providers)}
        )
    program = VoucherProgram.objects.create(
        issuer=issuer,
        name=name,
        currency=currency,
        budget=budget,
        coverage_share=coverage_share,
        per_company_yearly_cap=per_company_yearly_cap,
        valid_from=valid_from,
        valid_until=valid_until,
        provinces=sorted(set(provinces)),
        cities=sorted(set(cities)),
        sme_only=sme_only,
        hubs=sorted(set(hubs)),
        gpu_models=sorted(set(gpu_models)),
        workloads=sorted(set(workloads)),
        created_by=by,
    )
    program.providers.set(providers)
    audit_record(
        actor=by,
        action=AuditEvent.Action.VOUCHER_PROGRAM_CREATE,
        target=program,
        organization=issuer,
        summary={
            "name": name,
            "budget": format_yuan(budget),
            "coverage_share": str(coverage_share),
            "per_company_yearly_cap": format_yuan(per_company_yearly_cap),
            "currency": currency,
            "valid_from": valid_from.isoformat(),
            "valid_until": valid_until.isoformat(),
        },
    )
    return program


def _lock_program(program: VoucherProgram) -> VoucherProgram:
    return VoucherProgram.objects.select_for_update(no_key=True).get(pk=program.pk)


@transaction.atomic
def program_open(*, program: VoucherProgram, by: str, now: datetime | None = None) -> VoucherProgram:
    """A draft program opens: from now on it grants vouchers."""
    now = now or timezone.now()
    locked = _lock_program(program)
    if locked.status != Status.DRAFT:
        raise ConflictError(
            gettext("This program is %(status)s; only a draft opens.") % {"status": locked.status},
            code="invalid_transition",
        )
    if locked.valid_until <= now:
        raise ConflictError(gettext("This program's validity has already ended."), code="program_ended")
    locked.status, locked.opened_at = Status.OPEN, now
    locked.save(update_fields=["status", "opened_at"])
    audit_record(
        actor=by, action=AuditEvent.Action.VOUCHER_PROGRAM_OPEN, target=locked, organization=locked.issuer, summary={}
    )
    return locked


@transaction.atomic
def program_close(*, program: VoucherProgram, by: str, now: datetime | None = None) -> VoucherProgram:
    """A program closes: it grants no more vouchers. Vouchers already granted keep paying
    until they expire (revoke them to stop them sooner)."""
    now = now or timezone.now()
    locked = _lock_program(program)
    if locked.status == Status.CLOSED:
        raise ConflictError(gettext("This program is already closed."), code="invalid_transition")
    previous = locked.status
    locked.status, locked.closed_at = Status.CLOSED, now
    locked.save(update_fields=["status", "closed_at"])
    audit_record(
        actor=by,
        action=AuditEvent.Action.VOUCHER_PROGRAM_CLOSE,
        target=locked,
        organization=locked.issuer,
        summary={"from_status": previous},
    )
    return locked


# --- vouchers ------------------------------------------------------------------


def _new_code() -> str:
    body = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return f"CV-{body[:4]}-{body[4:8]}-{body[8:]}"


@transaction.atomic
def vouchers_issue(
    *, program: VoucherProgram, requests: Sequence[VoucherRequest], by: str, now: datetime | None = None
) -> list[Voucher]:
    """Grant vouchers, all or none: every row must pass and their face values must fit in
    what is left of the budget, checked under the program's lock."""
    now = now or timezone.now()
    if not requests:
        raise ApplicationError(gettext("Give at least one voucher to issue."), code="no_vouchers")
    if len(requests) > MAX_VOUCHERS_PER_REQUEST:
        raise ApplicationError(
            gettext("At most %(MAX_VOUCHERS_PER_REQUEST)s vouchers at once; split the list.")
            % {"MAX_VOUCHERS_PER_REQUEST": MAX_VOUCHERS_PER_REQUEST},
            code="too_many_vouchers",
        )
    locked = _lock_program(program)
    check_program_issuable(locked, now)
    problems = row_problems(program=locked, requests=list(enumerate(requests)), now=now)
    if problems:
        raise VouchersRefused(problems, rows=len(requests), status_code=422)
    total = sum(request.face_value for request in requests)
    if total > locked.budget_left:
        raise RuleViolation(
            gettext(
                "These vouchers total %(format_yuan)s but the program has %(format_yuan2)s of "
                "its budget left; nothing was issued."
            )
            % {"format_yuan": format_yuan(total), "format_yuan2": format_yuan(locked.budget_left)},
            code="budget_exceeded",
            details={"budget_left": format_yuan(locked.budget_left), "requested": format_yuan(total)},
        )
    valid_from = max(now, locked.valid_from)
    codes: set[str] = set()
    while len(codes) < len(requests):
        codes.add(_new_code())
    vouchers = Voucher.objects.bulk_create(
        [
            Voucher(
                code=code,
                program=locked,
                buyer=request.organization,
                currency=locked.currency,
                face_value=request.face_value,
                remaining=request.face_value,
                valid_from=valid_from,
                valid_until=request.valid_until or locked.valid_until,
                issued_by=by,
            )
            for code, request in zip(sorted(codes), requests, strict=True)
        ]
    )
    VoucherProgram.objects.filter(pk=locked.pk).update(committed=F("committed") + total)
    audit_record_many(
        actor=by,
        action=AuditEvent.Action.VOUCHER_ISSUE,
        targets=[
            (
                voucher,
                locked.issuer,
                {
                    "program": str(locked.pk),
                    "buyer": str(voucher.buyer_id),
                    "code": voucher.code,
                    "face_value": format_yuan(voucher.face_value),
                    "valid_until": voucher.valid_until.isoformat(),
                },
            )
            for voucher in vouchers
        ],
    )
    return vouchers


def _end_vouchers(*, vouchers: Iterable[Voucher], status: str, now: datetime, by: str, reason: str) -> None:
    """Expire or revoke live vouchers, already locked with their programs: what is left on
    each goes back to its program's budget."""
    vouchers = list(vouchers)
    if not vouchers:
        return
    assert all(voucher.status in Voucher.LIVE for voucher in vouchers), "only a live voucher ends"
    Voucher.objects.filter(pk__in=[voucher.pk for voucher in vouchers]).update(
        status=status,
        released=F("released") + F("remaining"),
        remaining=0,
        ended_at=now,
        ended_by=by,
        end_reason=reason,
    )
    released: dict[Any, int] = {}
    for voucher in vouchers:
        released[voucher.program_id] = released.get(voucher.program_id, 0) + voucher.remaining
    for program_id, amount in released.items():
        if amount:
            VoucherProgram.objects.filter(pk=program_id).update(committed=F("committed") - amount)


@transaction.atomic
def voucher_revoke(*, voucher: Voucher, by: str, reason: str = "", now: datetime | None = None) -> Voucher:
    """The issuer withdraws a voucher: it pays nothing more and its remaining value goes back to the budget."""
    now = now or timezone.now()
    VoucherProgram.objects.select_for_update(no_key=True).get(pk=voucher.program_id)  # the program first
    locked = Voucher.objects.select_for_update(no_key=True).get(pk=voucher.pk)
    if locked.status in Voucher.ENDED:
        raise ConflictError(
            gettext("This voucher is already %(status)s.") % {"status": locked.status}, code="voucher_ended"
        )
    _end_vouchers(vouchers=[locked], status=Voucher.Status.REVOKED, now=now, by=by, reason=reason or "revoked")
    audit_record(
        actor=by,
        action=AuditEvent.Action.VOUCHER_REVOKE,
        target=locked,
        organization=locked.program.issuer,
        summary={"buyer": str(locked.buyer_id), "released": format_yuan(locked.remaining), "reason": reason},
    )
    locked.refresh_from_db()
    return locked


def vouchers_expire(*, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Expire the vouchers past their validity and its grace, giving what they did not spend
    back to their programs' budgets (breakage), and close programs whose validity ended.
    Safe to run twice: only live vouchers expire. Returns how many expired."""
    now = now or timezone.now()
    cutoff = now - LATE_INVOICE_GRACE
    due = Voucher.objects.filter(status__in=Voucher.LIVE, valid_until__lte=cutoff)
    expired = 0
    for program_id in sorted(due.order_by().values_list("program_id", flat=True).distinct()):
        while (count := _expire_some(program_id=program_id, cutoff=cutoff, now=now, limit=batch_size)) > 0:
            expired += count
    VoucherProgram.objects.filter(status=Status.OPEN, valid_until__lte=now).update(status=Status.CLOSED, closed_at=now)
    return expired


@transaction.atomic
def _expire_some(*, program_id: Any, cutoff: datetime, now: datetime, limit: int) -> int:
    VoucherProgram.objects.select_for_update(no_key=True).get(pk=program_id)
    due = list(
        Voucher.objects.select_for_update(no_key=True)
        .filter(program_id=program_id, status__in=Voucher.LIVE, valid_until__lte=cutoff)
        .order_by("pk")[:limit]
    )
    _end_vouchers(vouchers=due, status=Voucher.Status.EXPIRED, now=now, by="scheduler", reason="validity ended")
    return len(due)


# --- redemption and reversal ---------------------------------------------------


def _check_lines(invoice_ref: str, lines: Sequence[ChargeLine], at: datetime) -> None:
    """Billing's lines are trusted values; anything malformed is a bug there, not bad input."""
    if not invoice_ref or len(invoice_ref) > 100:
        raise ValueError("invoice_ref must have 1 to 100 characters")
    if timezone.is_naive(at):
        raise ValueError("at must be an aware datetime")
    refs = [line.line_ref for line in lines]
    if len(set(refs)) != len(refs):
        raise ValueError("line_ref values must be unique within an invoice")
    for line in lines:
        if not line.line_ref or len(line.line_ref) > 100:
            raise ValueError("line_ref must have 1 to 100 characters")
        if isinstance(line.amount, bool) or not isinstance(line.amount, int) or line.amount < 0:
            raise ValueError(f"line {line.line_ref}: amount must be a non-negative integer of fen")
        if any(len(value) > 64 for value in (line.lease_id, line.pool_id, line.hub, line.gpu_model, line.workload)):
            raise ValueError(f"line {line.line_ref}: an id or code is longer than 64 characters")
        if timezone.is_naive(line.period_start) or timezone.is_naive(line.period_end):
            raise ValueError(f"line {line.line_ref}: the usage period must be aware datetimes")
        if line.period_end < line.period_start:
            raise ValueError(f"line {line.line_ref}: the usage period ends before it starts")
        if line.hours and (
            sum(amount for _, amount in line.hours) != line.amount
            or any(amount < 0 or timezone.is_naive(hour) for hour, amount in line.hours)
        ):
            raise ValueError(f"line {line.line_ref}: the hours must be aware and their fen add up to the amount")
        uuid.UUID(line.provider_id)


def _digest(buyer: Organization, lines: Sequence[ChargeLine]) -> str:
    canonical = [
        [
            line.line_ref,
            line.amount,
            line.lease_id,
            line.pool_id,
            line.provider_id,
            line.hub,
            line.gpu_model,
            line.workload,
            line.period_start.astimezone(UTC).isoformat(),
            line.period_end.astimezone(UTC).isoformat(),
            # Only when given: the digests of lines without hours stay what they were.
            *([[[hour.astimezone(UTC).isoformat(), amount] for hour, amount in line.hours]] if line.hours else []),
        ]
        for line in sorted(lines, key=lambda line: line.line_ref)
    ]
    return hashlib.sha256(json.dumps([str(buyer.pk), canonical]).encode()).hexdigest()


def _claim(*, invoice_ref: str, buyer: Organization, digest: str, at: datetime) -> tuple[Claim, bool]:
    """Record the invoice's claim first. A second claim of the same invoice waits on the
    unique index until the first commits, then finds it."""
    try:
        with transaction.atomic():
            return Claim.objects.create(invoice_ref=invoice_ref, buyer=buyer, lines_digest=digest, claimed_at=at), True
    except IntegrityError:
        return Claim.objects.select_for_update(no_key=True).get(invoice_ref=invoice_ref), False


def _outcome_json(outcome: LineOutcome) -> dict[str, Any]:
    return {
        "line_ref": outcome.line_ref,
        "amount": outcome.amount,
        "voucher_amount": outcome.voucher_amount,
        "reasons": [
            {"code": r.code, "message": r.message, "voucher_id": r.voucher_id, "voucher_code": r.voucher_code}
            for r in outcome.reasons
        ],
    }


def _outcome(data: dict[str, Any]) -> LineOutcome:
    return LineOutcome(
        line_ref=data["line_ref"],
        amount=data["amount"],
        voucher_amount=data["voucher_amount"],
        reasons=tuple(Ineligibility(**reason) for reason in data["reasons"]),
    )


def _redemption_line(redemption: Redemption) -> RedemptionLine:
    return RedemptionLine(
        redemption_id=str(redemption.pk),
        line_ref=redemption.line_ref,
        voucher_id=str(redemption.voucher_id),
        voucher_code=redemption.voucher.code,
        program_id=str(redemption.program_id),
        issuer_id=str(redemption.program.issuer_id),
        amount=redemption.amount,
    )


def _replay(claim: Claim, *, buyer: Organization, digest: str) -> RedemptionResult:
    if claim.buyer_id != buyer.pk or claim.lines_digest != digest:
        raise ConflictError(
            gettext("Invoice %(invoice_ref)s was already redeemed with other lines or for another buyer.")
            % {"invoice_ref": claim.invoice_ref},
            code="invoice_already_claimed",
        )
    if claim.reversed_at is not None:
        raise ConflictError(
            gettext("Invoice %(invoice_ref)s was voided and its redemptions reversed.")
            % {"invoice_ref": claim.invoice_ref},
            code="invoice_reversed",
        )
    # In the order they were made: by line, then soonest-expiring voucher first.
    line_order = {data["line_ref"]: index for index, data in enumerate(claim.outcome)}
    redemptions = sorted(
        claim.redemptions.select_related("voucher", "program"),
        key=lambda r: (line_order[r.line_ref], r.voucher.valid_until, r.voucher.valid_from, r.voucher.code),
    )
    return RedemptionResult(
        invoice_ref=claim.invoice_ref,
        lines=tuple(_outcome(data) for data in claim.outcome),
        redemptions=tuple(_redemption_line(redemption) for redemption in redemptions),
        replayed=True,
    )


def _lock_caps(*, buyer: Organization, keys: set[CapKey]) -> dict[CapKey, YearlyCapUsage]:
    if not keys:
        return {}
    YearlyCapUsage.objects.bulk_create(
        [YearlyCapUsage(buyer=buyer, issuer_id=issuer_id, year=year) for issuer_id, year in sorted(keys)],
        ignore_conflicts=True,
    )
    rows = YearlyCapUsage.objects.select_for_update(no_key=True).filter(
        buyer=buyer, issuer_id__in={issuer for issuer, _ in keys}, year__in={year for _, year in keys}
    )
    return {(str(row.issuer_id), row.year): row for row in rows.order_by("pk")}


@transaction.atomic
def vouchers_redeem(
    *, buyer: Organization, invoice_ref: str, lines: Sequence[ChargeLine], at: datetime
) -> RedemptionResult:
    """Let the buyer's vouchers pay their share of an invoice's lines (see ``vouchers.allocation``
    for the rules), under the locks of the buyer's vouchers and yearly caps.

    Called by billing when it finalizes an invoice, inside its transaction. Idempotent per
    invoice: the same invoice and lines again create nothing and return the same result.
    """
    _check_lines(invoice_ref, lines, at)
    digest = _digest(buyer, lines)
    claim, created = _claim(invoice_ref=invoice_ref, buyer=buyer, digest=digest, at=at)
    if not created:
        return _replay(claim, buyer=buyer, digest=digest)

    vouchers = list(
        redeemable_vouchers(buyer=buyer, at=at)
        .select_related("program")
        .select_for_update(of=("self",), no_key=True)
        .order_by("pk")
    )
    billable = [line for line in lines if line.amount > 0]
    related = related_providers(buyer=buyer, provider_ids={line.provider_id for line in billable})
    keys = {(str(v.program.issuer_id), cap_year(line.period_start)) for v in vouchers for line in billable}
    caps = _lock_caps(buyer=buyer, keys=keys)
    outcomes, grants = allocate(
        lines=lines,
        purses=purses(vouchers),
        cap_used={key: row.redeemed for key, row in caps.items()},
        related_providers=related,
    )
    redemptions = _record(claim=claim, buyer=buyer, grants=grants, vouchers=vouchers, caps=caps, at=at)
    claim.outcome = [_outcome_json(outcome) for outcome in outcomes]
    claim.save(update_fields=["outcome"])
    return RedemptionResult(
        invoice_ref=invoice_ref,
        lines=tuple(outcomes),
        redemptions=tuple(_redemption_line(redemption) for redemption in redemptions),
    )


def _record(
    *,
    claim: Claim,
    buyer: Organization,
    grants: Sequence[Grant],
    vouchers: Sequence[Voucher],
    caps: dict[CapKey, YearlyCapUsage],
    at: datetime,
) -> list[Redemption]:
    by_id = {str(voucher.pk): voucher for voucher in vouchers}
    redemptions = Redemption.objects.bulk_create(
        [
            Redemption(
                claim=claim,
                voucher=by_id[grant.purse.id],
                program=by_id[grant.purse.id].program,
                buyer=buyer,
                provider_id=grant.line.provider_id,
                invoice_ref=claim.invoice_ref,
                line_ref=grant.line.line_ref,
                lease_id=grant.line.lease_id,
                pool_id=grant.line.pool_id,
                hub=grant.line.hub,
                gpu_model=grant.line.gpu_model,
                workload=grant.line.workload,
                period_start=grant.line.period_start,
                period_end=grant.line.period_end,
                cap_year=grant.cap_year,
                line_amount=grant.line.amount,
                amount=grant.amount,
                currency=by_id[grant.purse.id].currency,
                redeemed_at=at,
            )
            for grant in grants
        ]
    )
    spent: dict[str, int] = {}
    added: dict[CapKey, int] = {}
    for grant in grants:
        spent[grant.purse.id] = spent.get(grant.purse.id, 0) + grant.amount
        key = (grant.purse.issuer_id, grant.cap_year)
        added[key] = added.get(key, 0) + grant.amount
    for voucher_id, amount in spent.items():
        voucher = by_id[voucher_id]
        exhausted = voucher.remaining == amount
        Voucher.objects.filter(pk=voucher.pk).update(
            remaining=F("remaining") - amount,
            status=Voucher.Status.EXHAUSTED if exhausted else Voucher.Status.ACTIVE,
        )
    for key, amount in added.items():
        YearlyCapUsage.objects.filter(pk=caps[key].pk).update(redeemed=F("redeemed") + amount)
    return redemptions


@transaction.atomic
def vouchers_reverse(*, invoice_ref: str, at: datetime) -> ReversalResult:
    """Undo an invoice's redemptions when billing voids it: each amount goes back to its
    voucher and to the company's yearly cap. A voucher that expired or was revoked meanwhile
    takes nothing back; the amount is breakage, released to its program's budget.

    Idempotent: reversing again, or an invoice vouchers never paid, changes nothing.
    """
    if timezone.is_naive(at):
        raise ValueError("at must be an aware datetime")
    claim = Claim.objects.select_for_update(no_key=True).filter(invoice_ref=invoice_ref).first()
    if claim is None:
        return ReversalResult(invoice_ref=invoice_ref)
    if claim.reversed_at is not None:
        return _reversal_result(claim, replayed=True)

    _reverse(list(claim.redemptions.filter(reversal__isnull=True).order_by("pk")), at=at)
    claim.reversed_at = at
    claim.save(update_fields=["reversed_at"])
    return _reversal_result(claim, replayed=False)


def _reverse(redemptions: list[Redemption], *, at: datetime, rejected: bool = False) -> None:
    """Give these redemptions back (their invoice claims locked by the caller): programs, then
    vouchers, then each buyer's yearly-cap rows are locked in primary-key order. A void's amount
    goes back to its live voucher, or to its program's budget as breakage if the voucher has ended;
    a ``rejected`` amount (the issuer refused to fund it) always goes to the program's budget, off
    the voucher's commitment, so that the voucher never spends it again."""
    program_ids = sorted({redemption.program_id for redemption in redemptions})
    programs = {
        p.pk: p for p in VoucherProgram.objects.select_for_update(no_key=True).filter(pk__in=program_ids).order_by("pk")
    }
    voucher_ids = {redemption.voucher_id for redemption in redemptions}
    locked = list(Voucher.objects.select_for_update(no_key=True).filter(pk__in=voucher_ids).order_by("pk"))
    lapsed = [v for v in locked if v.status in Voucher.LIVE and v.valid_until <= at - LATE_INVOICE_GRACE]
    _end_vouchers(vouchers=lapsed, status=Voucher.Status.EXPIRED, now=at, by="reversal", reason="validity ended")
    vouchers = {v.pk: v for v in Voucher.objects.filter(pk__in=voucher_ids)}
    caps: dict[Any, dict[CapKey, YearlyCapUsage]] = {}
    for buyer_id in sorted({r.buyer_id for r in redemptions}, key=str):
        keys = {(str(programs[r.program_id].issuer_id), r.cap_year) for r in redemptions if r.buyer_id == buyer_id}
        caps[buyer_id] = _lock_caps(buyer=Organization(pk=buyer_id), keys=keys)

    # Per voucher, where each amount goes: the Reversal column and the Voucher column that take it.
    parts: dict[str, dict[Any, int]] = {"returned": {}, "breakage": {}, "rejected": {}}
    reversals = []
    for redemption in redemptions:
        live = vouchers[redemption.voucher_id].status in Voucher.LIVE
        part = "rejected" if rejected else "returned" if live else "breakage"
        parts[part][redemption.voucher_id] = parts[part].get(redemption.voucher_id, 0) + redemption.amount
        reversals.append(
            Reversal(
                redemption=redemption,
                amount=redemption.amount,
                returned=redemption.amount if part == "returned" else 0,
                breakage=redemption.amount if part == "breakage" else 0,
                rejected=redemption.amount if part == "rejected" else 0,
                reversed_at=at,
            )
        )
        key = (str(programs[redemption.program_id].issuer_id), redemption.cap_year)
        cap = caps[redemption.buyer_id][key]
        YearlyCapUsage.objects.filter(pk=cap.pk).update(redeemed=F("redeemed") - redemption.amount)
    Reversal.objects.bulk_create(reversals)
    for voucher_id, amount in parts["returned"].items():
        Voucher.objects.filter(pk=voucher_id).update(remaining=F("remaining") + amount, status=Voucher.Status.ACTIVE)
    to_budget: dict[Any, int] = {}
    for part, column in (("breakage", "released"), ("rejected", "rejected")):
        for voucher_id, amount in parts[part].items():
            Voucher.objects.filter(pk=voucher_id).update(**{column: F(column) + amount})
            program_id = vouchers[voucher_id].program_id
            to_budget[program_id] = to_budget.get(program_id, 0) + amount
    for program_id, amount in to_budget.items():
        VoucherProgram.objects.filter(pk=program_id).update(committed=F("committed") - amount)


@transaction.atomic
def redemptions_reject(*, redemption_ids: Sequence[Any], at: datetime) -> list[Redemption]:
    """The issuer refused to fund these redemptions in its claim review (the company is billed them
    instead): each amount goes back to its program's budget, never to its voucher, whether the
    voucher lives or has ended, and to the company's yearly cap; once. Returns those given back now:
    a redemption already reversed (its invoice voided, or rejected before) is left as it is."""
    claim_ids = sorted(set(Redemption.objects.filter(pk__in=redemption_ids).values_list("claim_id", flat=True)))
    list(Claim.objects.select_for_update(no_key=True).filter(pk__in=claim_ids).order_by("pk"))
    redemptions = list(Redemption.objects.filter(pk__in=redemption_ids, reversal__isnull=True).order_by("pk"))
    _reverse(redemptions, at=at, rejected=True)
    return redemptions


def _reversal_result(claim: Claim, *, replayed: bool) -> ReversalResult:
    totals: dict[Any, dict[str, Any]] = {}
    reversals = Reversal.objects.filter(redemption__claim=claim, rejected=0).select_related(
        "redemption__voucher", "redemption__program"
    )
    for reversal in reversals.order_by("redemption__voucher__code"):
        redemption = reversal.redemption
        row = totals.setdefault(
            redemption.voucher_id,
            {
                "voucher_id": str(redemption.voucher_id),
                "voucher_code": redemption.voucher.code,
                "program_id": str(redemption.program_id),
                "issuer_id": str(redemption.program.issuer_id),
                "returned": 0,
                "breakage": 0,
            },
        )
        row["returned"] += reversal.returned
        row["breakage"] += reversal.breakage
    return ReversalResult(
        invoice_ref=claim.invoice_ref,
        vouchers=tuple(VoucherReturn(**row) for row in totals.values()),
        replayed=replayed,
    )
