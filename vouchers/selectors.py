"""Reads of vouchers: lists for each kind of caller, the estimate for quotes, the issuer's report."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncMonth
from django.utils import timezone

from core.timezones import local_zone
from organizations.models import Organization
from organizations.selectors import related_organizations, taxpayer_ids
from vouchers.allocation import CapKey, Purse, allocate
from vouchers.charges import ChargeLine
from vouchers.models import LATE_INVOICE_GRACE, Redemption, Reversal, Voucher, VoucherProgram, YearlyCapUsage

Kind = Organization.Kind


def program_list(*, organization: Organization) -> QuerySet[VoucherProgram]:
    """Issuers see their own programs; operators see every program."""
    programs = VoucherProgram.objects.select_related("issuer").prefetch_related("providers")
    if organization.kind == Kind.OPERATOR:
        return programs
    return programs.filter(issuer=organization)


def voucher_list(*, organization: Organization) -> QuerySet[Voucher]:
    """Buyers see their vouchers, issuers the vouchers of their programs, operators all."""
    vouchers = Voucher.objects.select_related("program", "program__issuer", "buyer").prefetch_related(
        "redemptions__provider", "redemptions__reversal"
    )
    if organization.kind == Kind.BUYER:
        return vouchers.filter(buyer=organization)
    if organization.kind == Kind.ISSUER:
        return vouchers.filter(program__issuer=organization)
    if organization.kind == Kind.OPERATOR:
        return vouchers
    return vouchers.none()


def redeemable_vouchers(*, buyer: Organization, at: datetime) -> QuerySet[Voucher]:
    """The buyer's vouchers that may pay an invoice finalized at ``at``: active, and not past
    their validity by more than the grace given to the invoice of their last days."""
    return Voucher.objects.filter(buyer=buyer, status=Voucher.Status.ACTIVE, valid_until__gt=at - LATE_INVOICE_GRACE)


def purses(vouchers: Sequence[Voucher]) -> list[Purse]:
    """Vouchers (with their programs) as allocation sees them; one query for the provider allow-lists."""
    through = VoucherProgram.providers.through
    allowed: dict[Any, set[str]] = {}
    rows = through.objects.filter(voucherprogram_id__in={voucher.program_id for voucher in vouchers})
    for program_id, provider_id in rows.values_list("voucherprogram_id", "organization_id"):
        allowed.setdefault(program_id, set()).add(str(provider_id))
    return [
        Purse(
            id=str(voucher.pk),
            code=voucher.code,
            program_id=str(voucher.program_id),
            program_name=voucher.program.name,
            issuer_id=str(voucher.program.issuer_id),
            coverage_share=voucher.program.coverage_share,
            yearly_cap=voucher.program.per_company_yearly_cap,
            remaining=voucher.remaining,
            valid_from=voucher.valid_from,
            valid_until=voucher.valid_until,
            providers=frozenset(allowed.get(voucher.program_id, ())),
            hubs=frozenset(voucher.program.hubs),
            gpu_models=frozenset(voucher.program.gpu_models),
            workloads=frozenset(voucher.program.workloads),
        )
        for voucher in vouchers
    ]


def related_providers(*, buyer: Organization, provider_ids: Iterable[str]) -> frozenset[str]:
    """The providers among ``provider_ids`` in the buyer's group (``related_organizations``): never paid."""
    wanted = {UUID(provider_id) for provider_id in provider_ids}
    missing = wanted - set(Organization.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    if missing:
        raise ValueError(f"no organizations with ids {sorted(map(str, missing))}")
    group = related_organizations(organization=buyer) if wanted else frozenset()
    return frozenset(str(provider_id) for provider_id in wanted if provider_id in group)


def voucher_estimates(
    *, buyer: Organization, alternatives: Sequence[Sequence[ChargeLine]], at: datetime | None = None
) -> list[int]:
    """What the buyer's vouchers would pay now of each alternative set of lines (each on its
    own, e.g. each placement of a quote), in fen. Reads only: nothing is locked or written."""
    at = at or timezone.now()
    vouchers = list(redeemable_vouchers(buyer=buyer, at=at).select_related("program"))
    if not vouchers:
        return [0] * len(alternatives)
    template = purses(vouchers)
    related = related_providers(
        buyer=buyer, provider_ids={line.provider_id for lines in alternatives for line in lines}
    )
    cap_used: dict[CapKey, int] = {
        (str(issuer_id), year): redeemed
        for issuer_id, year, redeemed in YearlyCapUsage.objects.filter(buyer=buyer).values_list(
            "issuer_id", "year", "redeemed"
        )
    }
    estimates = []
    for lines in alternatives:
        outcomes, _ = allocate(
            lines=lines,
            purses=[replace(purse) for purse in template],
            cap_used=dict(cap_used),
            related_providers=related,
        )
        estimates.append(sum(outcome.voucher_amount for outcome in outcomes))
    return estimates


# --- the issuer's report -------------------------------------------------------


def _net() -> Any:
    """Redeemed less reversed, over redemption rows."""
    return Coalesce(Sum("amount"), 0) - Coalesce(Sum("reversal__amount"), 0)


def program_report(*, program: VoucherProgram) -> dict[str, Any]:
    """Budget, grants, spend by company, provider, the company's province, hub and month (of the usage, Asia/Shanghai),
    expiry, claim lines the issuer rejected and what is left, all derived from voucher and redemption rows.
    Amounts in fen; ``redeemed`` is net of both voids (``reversed``) and rejections (``rejected``)."""
    vouchers = Voucher.objects.filter(program=program)
    live, status = Q(status__in=Voucher.LIVE), Voucher.Status
    totals = vouchers.aggregate(
        granted=Coalesce(Sum("face_value"), 0),
        outstanding=Coalesce(Sum("remaining", filter=live), 0),
        expired=Coalesce(Sum("released", filter=Q(status=status.EXPIRED)), 0),
        revoked=Coalesce(Sum("released", filter=Q(status=status.REVOKED)), 0),
    )
    counts = dict(vouchers.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
    redemptions = Redemption.objects.filter(program=program)
    spent = redemptions.aggregate(
        gross=Coalesce(Sum("amount"), 0),
        undone=Coalesce(Sum("reversal__amount"), 0),
        rejected=Coalesce(Sum("reversal__rejected"), 0),
        count=Count("pk"),
    )
    redeemed = spent["gross"] - spent["undone"]

    granted_by_company = {
        row["buyer_id"]: row
        for row in vouchers.values("buyer_id", "buyer__slug", "buyer__legal_name", "buyer__credit_code").annotate(
            granted=Sum("face_value"), outstanding=Coalesce(Sum("remaining", filter=live), 0), vouchers=Count("pk")
        )
    }
    spent_by_company: dict[Any, Mapping[str, Any]] = {
        row["buyer_id"]: row
        for row in redemptions.values("buyer_id").annotate(redeemed=_net(), redemptions=Count("pk"))
    }
    taxpayers = taxpayer_ids(organization_ids=granted_by_company)
    by_company = sorted(
        (
            {
                "organization": row["buyer__slug"],
                "legal_name": row["buyer__legal_name"],
                "credit_code": row["buyer__credit_code"],
                "taxpayer_id": taxpayers.get(buyer_id, row["buyer__credit_code"]),
                "vouchers": row["vouchers"],
                "granted": row["granted"],
                "outstanding": row["outstanding"],
                "redeemed": spent_by_company.get(buyer_id, {}).get("redeemed", 0),
                "redemptions": spent_by_company.get(buyer_id, {}).get("redemptions", 0),
            }
            for buyer_id, row in granted_by_company.items()
        ),
        key=lambda row: (-row["redeemed"], row["organization"]),
    )
    by_provider = [
        {"provider": row["provider__slug"], "legal_name": row["provider__legal_name"], **_spend(row)}
        for row in redemptions.values("provider__slug", "provider__legal_name")
        .annotate(redeemed=_net(), redemptions=Count("pk"))
        .order_by("-redeemed", "provider__slug")
    ]
    by_province = [
        {"province": row["buyer__province"], **_spend(row)}
        for row in redemptions.values("buyer__province")
        .annotate(redeemed=_net(), redemptions=Count("pk"))
        .order_by("-redeemed", "buyer__province")
    ]
    by_hub = [
        {"hub": row["hub"], **_spend(row)}
        for row in redemptions.values("hub")
        .annotate(redeemed=_net(), redemptions=Count("pk"))
        .order_by("-redeemed", "hub")
    ]
    by_month = [
        {"month": f"{row['month']:%Y-%m}", **_spend(row)}
        for row in redemptions.annotate(month=TruncMonth("period_start", tzinfo=local_zone()))
        .values("month")
        .annotate(redeemed=_net(), redemptions=Count("pk"))
        .order_by("month")
    ]
    return {
        "program": program,
        "currency": program.currency,
        "budget": program.budget,
        "granted": totals["granted"],
        "committed": program.committed,
        "redeemed": redeemed,
        "reversed": spent["undone"] - spent["rejected"],
        "outstanding": totals["outstanding"],
        "expired": totals["expired"],
        "revoked": totals["revoked"],
        "rejected": spent["rejected"],
        "left": program.budget_left,
        "vouchers": {choice: counts.get(choice, 0) for choice in status.values},
        "redemptions": spent["count"],
        "by_company": by_company,
        "by_provider": by_provider,
        "by_province": by_province,
        "by_hub": by_hub,
        "by_month": by_month,
    }


def programs_spent(*, programs: Iterable[VoucherProgram]) -> dict[Any, dict[str, int]]:
    """Each program's redeemed (less reversals, in fen) and the companies its vouchers paid for,
    as ``program_report`` counts them, in one query."""
    rows = (
        Redemption.objects.filter(program__in=list(programs))
        .values("program_id")
        .annotate(redeemed=_net(), companies=Count("buyer_id", distinct=True))
        .order_by()
    )
    return {row["program_id"]: {"redeemed": row["redeemed"], "companies": row["companies"]} for row in rows}


def _spend(row: Mapping[str, Any]) -> dict[str, int]:
    return {"redeemed": row["redeemed"], "redemptions": row["redemptions"]}


def redemption_trail(*, program: VoucherProgram) -> QuerySet[Redemption]:
    """Every redemption of the program with what it paid for, oldest first: the audit trail."""
    return (
        Redemption.objects.filter(program=program)
        .select_related("voucher", "buyer", "provider", "reversal")
        .order_by("redeemed_at", "pk")
    )


def program_burndown(*, program: VoucherProgram, until: datetime | None = None) -> list[dict[str, Any]]:
    """The program's budget day by day (Asia/Shanghai days), cumulative, in fen: granted (face
    values), redeemed (less reversals and rejections), expired and revoked (released when the
    voucher ended), rejected in claim reviews (back to the budget when rejected), outstanding on
    vouchers and left to grant. The last day's figures are the report's."""
    zone = local_zone()

    def by_day(rows: QuerySet[Any], at: str, amount: str) -> dict[Any, int]:
        per_day = rows.annotate(day=TruncDay(at, tzinfo=zone)).values("day").annotate(fen=Sum(amount)).order_by()
        return {row["day"].date(): row["fen"] for row in per_day}

    vouchers = Voucher.objects.filter(program=program)
    flows = {
        "granted": by_day(vouchers, "created_at", "face_value"),
        "expired": by_day(vouchers.filter(status=Voucher.Status.EXPIRED), "ended_at", "released"),
        "revoked": by_day(vouchers.filter(status=Voucher.Status.REVOKED), "ended_at", "released"),
        "redeemed": by_day(Redemption.objects.filter(program=program), "redeemed_at", "amount"),
        "reversed": by_day(Reversal.objects.filter(redemption__program=program), "reversed_at", "amount"),
        "rejected": by_day(
            Reversal.objects.filter(redemption__program=program, rejected__gt=0), "reversed_at", "rejected"
        ),
    }
    moves: dict[Any, dict[str, int]] = {}
    for name, days in flows.items():
        for day, fen in days.items():
            moves.setdefault(day, {})[name] = fen
    if not moves:
        return []
    last = timezone.localtime(until or timezone.now(), zone).date()
    first, totals = min(moves), dict.fromkeys(("granted", "redeemed", "expired", "revoked", "rejected"), 0)
    series, current = [], first
    while current <= max(last, max(moves)):
        move = moves.get(current, {})
        for name in totals:
            totals[name] += move.get(name, 0)
        totals["redeemed"] -= move.get("reversed", 0)
        back = totals["expired"] + totals["revoked"] + totals["rejected"]  # given back to the budget
        series.append(
            {
                "day": current.isoformat(),
                **totals,
                "outstanding": totals["granted"] - totals["redeemed"] - back,
                "left": program.budget - totals["granted"] + back,
            }
        )
        current += timedelta(days=1)
    return series
