"""Reads of payouts and claims, shared by the API and the dashboards."""

import csv
import io
from datetime import datetime
from typing import Any

from django.db.models import BigIntegerField, BooleanField, Case, ExpressionWrapper, F, Q, QuerySet, Sum, Value, When
from django.utils.translation import gettext_lazy

from billing.models import Account, Invoice, InvoiceLine, Leg, ProviderStatement
from billing.selectors import fapiao_numbers_by_invoice
from core.money import format_yuan
from organizations.models import Organization
from organizations.selectors import taxpayer_ids
from pools.models import ResourcePool
from settlements.models import ClaimPayment, PayoutLine, PayoutRun, SubsidyClaim
from vouchers.models import Redemption
from vouchers.report_csv import _cell, heading  # the same guard against formulas, the same headings

Kind = Organization.Kind


def payout_runs(*, organization: Organization) -> QuerySet[PayoutRun]:
    if organization.kind != Kind.OPERATOR:
        return PayoutRun.objects.none()
    return PayoutRun.objects.prefetch_related(
        "lines__provider", "lines__account", "lines__items__invoice", "lines__items__statement"
    )


def payouts_of(*, provider: Organization) -> QuerySet[PayoutLine]:
    """The provider's payouts, newest first, each with the statements it settles."""
    return (
        PayoutLine.objects.filter(provider=provider)
        .select_related("provider", "account", "run")
        .prefetch_related("items__invoice", "items__statement")
        .order_by("-run__created_at")
    )


def claims_of(*, organization: Organization, now: datetime) -> QuerySet[SubsidyClaim]:
    claims = SubsidyClaim.objects.select_related("program", "issuer").annotate(
        due=ExpressionWrapper(F("approved") - F("received"), output_field=BigIntegerField()),
        overdue=Case(
            When(Q(status=SubsidyClaim.Status.REVIEWED, due_at__lt=now), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        ),
    )
    if organization.kind == Kind.OPERATOR:
        return claims
    if organization.kind == Kind.ISSUER:
        return claims.filter(issuer=organization)
    return claims.none()


def claim_evidence(claim: SubsidyClaim) -> list[dict[str, Any]]:
    """One row per line: the invoice, company, provider, pool, hub, usage and amounts it claims."""
    lines = list(
        claim.lines.select_related("redemption__buyer", "redemption__provider").order_by(
            "redemption__redeemed_at", "redemption__line_ref"
        )
    )
    refs = [line.redemption.line_ref for line in lines]
    invoice_lines = {str(row.pk): row for row in InvoiceLine.objects.filter(pk__in=refs)}
    numbers = {
        str(pk): number
        for pk, number in Invoice.objects.filter(pk__in={line.redemption.invoice_ref for line in lines}).values_list(
            "pk", "number"
        )
    }
    pools = {
        str(pk): name
        for pk, name in ResourcePool.objects.filter(pk__in={line.redemption.pool_id for line in lines}).values_list(
            "pk", "name"
        )
    }
    taxpayers = taxpayer_ids(organization_ids={line.redemption.buyer_id for line in lines})
    fapiao = fapiao_numbers_by_invoice({line.redemption.invoice_ref for line in lines})
    rows = []
    for line in lines:
        redemption = line.redemption
        source = invoice_lines.get(redemption.line_ref)
        rows.append(
            {
                "id": line.pk,
                "status": line.status,
                "reason_code": line.reason_code,
                "reason": line.reason,
                "invoice_number": numbers.get(redemption.invoice_ref),
                "company": redemption.buyer.legal_name,
                "company_credit_code": redemption.buyer.credit_code,
                "company_taxpayer_id": taxpayers.get(redemption.buyer_id, redemption.buyer.credit_code),
                "fapiao_numbers": fapiao.get(redemption.invoice_ref, ""),
                "company_province": redemption.buyer.province,
                "provider": redemption.provider.legal_name,
                "pool": pools.get(redemption.pool_id, redemption.pool_id),
                "hub": redemption.hub,
                "gpu_model": redemption.gpu_model,
                "usage_quantity": source.quantity if source else None,
                "usage_unit": source.unit if source else "",
                "usage_start": redemption.period_start,
                "usage_end": redemption.period_end,
                "line_amount": redemption.line_amount,
                "voucher_share": line.amount,
            }
        )
    return rows


EVIDENCE_COLUMNS = [
    "line",
    "status",
    "reason_code",
    "reason",
    "invoice_number",
    "fapiao_numbers",
    "company",
    "company_credit_code",
    "company_taxpayer_id",
    "company_province",
    "provider",
    "pool",
    "hub",
    "gpu_model",
    "usage_quantity",
    "usage_unit",
    "usage_start",
    "usage_end",
    "line_amount",
    "voucher_share",
]


def claim_csv(claim: SubsidyClaim, rows: list[dict[str, Any]]) -> str:
    """The claim for an auditor: its header and totals, then every evidence line (docs/payouts.md)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(heading("claim", "program", "issuer", "period_start", "period_end", "status"))
    writer.writerow(
        [
            claim.number,
            _cell(claim.program.name),
            _cell(claim.issuer.legal_name),
            claim.period_start.isoformat(),
            claim.period_end.isoformat(),
            claim.status,
        ]
    )
    writer.writerow(heading("claimed", "approved", "rejected", "withdrawn", "received"))
    writer.writerow(
        [format_yuan(getattr(claim, f)) for f in ("claimed", "approved", "rejected", "withdrawn", "received")]
    )
    writer.writerow([])
    writer.writerow(heading(*EVIDENCE_COLUMNS))
    for row in rows:
        values = {
            **row,
            "line": row["id"],
            "line_amount": format_yuan(row["line_amount"]),
            "voucher_share": format_yuan(row["voucher_share"]),
            "usage_start": row["usage_start"].isoformat(),
            "usage_end": row["usage_end"].isoformat(),
        }
        writer.writerow([_cell(values[column]) for column in EVIDENCE_COLUMNS])
    return out.getvalue()


def money_owed(*, now: datetime) -> dict[str, Any]:
    """The operator's view: money in transit, owed by issuers, owed to providers and cash, each
    from the ledger and from the rows it stands for (they balance when ``reconcile`` is clean)."""
    ledger = dict(
        Leg.objects.filter(account__purpose__in=[purpose for purpose, _ in OWED])
        .values_list("account__purpose")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    lines = dict(PayoutLine.objects.values_list("status").annotate(total=Sum("amount")).order_by())
    sent, paid = int(lines.get(PayoutLine.Status.SENT, 0)), int(lines.get(PayoutLine.Status.PAID, 0))
    received = int(ClaimPayment.objects.aggregate(total=Sum("amount"))["total"] or 0)
    redeemed = Redemption.objects.aggregate(total=Sum("amount"), back=Sum("reversal__amount"))
    nets = int(ProviderStatement.objects.aggregate(total=Sum("net"))["total"] or 0)
    records = {
        Account.Purpose.PAYOUTS_IN_TRANSIT: sent,
        Account.Purpose.VOUCHER_RECEIVABLE: int(redeemed["total"] or 0) - int(redeemed["back"] or 0) - received,
        Account.Purpose.PROVIDER_PAYABLE: nets - sent - paid,
        Account.Purpose.CASH: received - paid,
    }
    rows = [
        {"label": label, "ledger": sign * int(ledger.get(purpose, 0)), "records": records[purpose]}
        for (purpose, sign), label in zip(OWED, OWED_LABELS, strict=True)
    ]
    overdue = SubsidyClaim.objects.filter(status=SubsidyClaim.Status.REVIEWED, due_at__lt=now)
    return {"rows": rows, "overdue_claims": overdue.count()}


# The accounts the operator watches, each with the sign that shows it as a positive amount owed or held.
OWED = [
    (Account.Purpose.PAYOUTS_IN_TRANSIT, -1),
    (Account.Purpose.VOUCHER_RECEIVABLE, 1),
    (Account.Purpose.PROVIDER_PAYABLE, -1),
    (Account.Purpose.CASH, 1),
]
OWED_LABELS = [
    gettext_lazy("In transit to providers"),
    gettext_lazy("Owed by issuers"),
    gettext_lazy("Owed to providers"),
    gettext_lazy("Cash (claim payments in, payouts out)"),
]
