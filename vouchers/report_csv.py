"""The issuer's report as CSV for the funding body, in sections: the totals; spend by
company, provider, province, hub and month; then every redemption with the invoice line, lease and
usage it paid for. Streamed row by row, so a program of any size fits.

The headings are the columns' names (``budget``, ``company_credit_code``) in English, as
scripts read them; in Chinese (the reader's language, ``Accept-Language`` on the API) they are
the same columns' Chinese names, for a funding body's auditors (``heading``)."""

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.utils.translation import pgettext_lazy

from core.money import format_yuan
from core.timezones import local_zone
from organizations.selectors import taxpayer_ids
from vouchers.documents import fapiao_numbers
from vouchers.models import Redemption

# A cell starting with one of these is a formula to a spreadsheet; names come from users.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Every heading of the issuer's report and of a subsidy claim's evidence (settlements.selectors).
HEADINGS = {
    "program": pgettext_lazy("report column", "program"),
    "program_id": pgettext_lazy("report column", "program_id"),
    "issuer": pgettext_lazy("report column", "issuer"),
    "currency": pgettext_lazy("report column", "currency"),
    "coverage_share": pgettext_lazy("report column", "coverage_share"),
    "totals": pgettext_lazy("report column", "totals"),
    "by_company": pgettext_lazy("report column", "by_company"),
    "organization": pgettext_lazy("report column", "organization"),
    "legal_name": pgettext_lazy("report column", "legal_name"),
    "credit_code": pgettext_lazy("report column", "credit_code"),
    "taxpayer_id": pgettext_lazy("report column", "taxpayer_id"),
    "vouchers": pgettext_lazy("report column", "vouchers"),
    "redemptions": pgettext_lazy("report column", "redemptions"),
    "by_provider": pgettext_lazy("report column", "by_provider"),
    "by_province": pgettext_lazy("report column", "by_province"),
    "province": pgettext_lazy("report column", "province"),
    "by_hub": pgettext_lazy("report column", "by_hub"),
    "by_month": pgettext_lazy("report column", "by_month"),
    "month": pgettext_lazy("report column", "month"),
    "budget": pgettext_lazy("report column", "budget"),
    "granted": pgettext_lazy("report column", "granted"),
    "committed": pgettext_lazy("report column", "committed"),
    "redeemed": pgettext_lazy("report column", "redeemed"),
    "reversed": pgettext_lazy("report column", "reversed"),
    "outstanding": pgettext_lazy("report column", "outstanding"),
    "expired": pgettext_lazy("report column", "expired"),
    "revoked": pgettext_lazy("report column", "revoked"),
    "rejected": pgettext_lazy("report column", "rejected"),
    "left": pgettext_lazy("report column", "left"),
    "redemption": pgettext_lazy("report column", "redemption"),
    "redeemed_at": pgettext_lazy("report column", "redeemed_at"),
    "voucher": pgettext_lazy("report column", "voucher"),
    "company": pgettext_lazy("report column", "company"),
    "company_credit_code": pgettext_lazy("report column", "company_credit_code"),
    "company_taxpayer_id": pgettext_lazy("report column", "company_taxpayer_id"),
    "provider": pgettext_lazy("report column", "provider"),
    "hub": pgettext_lazy("report column", "hub"),
    "gpu_model": pgettext_lazy("report column", "gpu_model"),
    "workload": pgettext_lazy("report column", "workload"),
    "usage_start": pgettext_lazy("report column", "usage_start"),
    "usage_end": pgettext_lazy("report column", "usage_end"),
    "usage_month": pgettext_lazy("report column", "usage_month"),
    "invoice": pgettext_lazy("report column", "invoice"),
    "invoice_line": pgettext_lazy("report column", "invoice_line"),
    "fapiao_numbers": pgettext_lazy("report column", "fapiao_numbers"),
    "lease": pgettext_lazy("report column", "lease"),
    "pool": pgettext_lazy("report column", "pool"),
    "line_amount": pgettext_lazy("report column", "line_amount"),
    "amount": pgettext_lazy("report column", "amount"),
    "reversed_at": pgettext_lazy("report column", "reversed_at"),
    "reversed_amount": pgettext_lazy("report column", "reversed_amount"),
    "returned_to_voucher": pgettext_lazy("report column", "returned_to_voucher"),
    "breakage": pgettext_lazy("report column", "breakage"),
    "rejected_in_claim": pgettext_lazy("report column", "rejected_in_claim"),
    "claim": pgettext_lazy("report column", "claim"),
    "period_start": pgettext_lazy("report column", "period_start"),
    "period_end": pgettext_lazy("report column", "period_end"),
    "status": pgettext_lazy("report column", "status"),
    "claimed": pgettext_lazy("report column", "claimed"),
    "approved": pgettext_lazy("report column", "approved"),
    "withdrawn": pgettext_lazy("report column", "withdrawn"),
    "received": pgettext_lazy("report column", "received"),
    "line": pgettext_lazy("report column", "line"),
    "reason_code": pgettext_lazy("report column", "reason_code"),
    "reason": pgettext_lazy("report column", "reason"),
    "invoice_number": pgettext_lazy("report column", "invoice_number"),
    "company_province": pgettext_lazy("report column", "company_province"),
    "usage_quantity": pgettext_lazy("report column", "usage_quantity"),
    "usage_unit": pgettext_lazy("report column", "usage_unit"),
    "voucher_share": pgettext_lazy("report column", "voucher_share"),
}

TOTALS = [
    "budget",
    "granted",
    "committed",
    "redeemed",
    "reversed",
    "outstanding",
    "expired",
    "revoked",
    "rejected",
    "left",
]
TRAIL = [
    "redemption",
    "redeemed_at",
    "voucher",
    "company",
    "company_credit_code",
    "company_taxpayer_id",
    "provider",
    "hub",
    "gpu_model",
    "workload",
    "usage_start",
    "usage_end",
    "usage_month",
    "invoice",
    "invoice_line",
    "fapiao_numbers",
    "lease",
    "pool",
    "line_amount",
    "amount",
    "reversed_at",
    "reversed_amount",
    "returned_to_voucher",
    "breakage",
    "rejected_in_claim",
]


def heading(*names: str) -> list[str]:
    """The columns' headings in the reader's language; a name not listed stays as written."""
    return [str(HEADINGS.get(name, name)) for name in names]


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def _trail_row(redemption: Redemption, taxpayer_id: str, fapiao: str) -> list[Any]:
    reversal = getattr(redemption, "reversal", None)
    return [
        redemption.pk,
        _time(redemption.redeemed_at),
        redemption.voucher.code,
        redemption.buyer.slug,
        redemption.buyer.credit_code,
        taxpayer_id,
        redemption.provider.slug,
        redemption.hub,
        redemption.gpu_model,
        redemption.workload,
        _time(redemption.period_start),
        _time(redemption.period_end),
        f"{redemption.period_start.astimezone(local_zone()):%Y-%m}",
        redemption.invoice_ref,
        redemption.line_ref,
        fapiao,
        redemption.lease_id,
        redemption.pool_id,
        format_yuan(redemption.line_amount),
        format_yuan(redemption.amount),
        _time(reversal.reversed_at) if reversal else "",
        format_yuan(reversal.amount) if reversal else "",
        format_yuan(reversal.returned) if reversal else "",
        format_yuan(reversal.breakage) if reversal else "",
        format_yuan(reversal.rejected) if reversal else "",
    ]


def report_csv(report: dict[str, Any], trail: Iterable[Redemption]) -> Iterator[str]:
    """``report`` from ``vouchers.selectors.program_report``; ``trail`` its redemptions."""
    writer = csv.writer(_Echo())

    def row(*cells: Any) -> str:
        return str(writer.writerow([_cell(cell) for cell in cells]))

    program = report["program"]
    yield row(*heading("program"), program.name)
    yield row(*heading("program_id"), program.pk)
    yield row(*heading("issuer"), program.issuer.legal_name)
    yield row(*heading("currency"), report["currency"])
    yield row(*heading("coverage_share"), program.coverage_share)
    yield row()
    yield row(*heading("totals"))
    yield row(*heading(*TOTALS))
    yield row(*(format_yuan(report[name]) for name in TOTALS))
    yield row()
    yield row(*heading("by_company"))
    yield row(
        *heading(
            "organization",
            "legal_name",
            "credit_code",
            "taxpayer_id",
            "vouchers",
            "granted",
            "outstanding",
            "redeemed",
            "redemptions",
        )
    )
    for company in report["by_company"]:
        yield row(
            company["organization"],
            company["legal_name"],
            company["credit_code"],
            company["taxpayer_id"],
            company["vouchers"],
            format_yuan(company["granted"]),
            format_yuan(company["outstanding"]),
            format_yuan(company["redeemed"]),
            company["redemptions"],
        )
    for section, key, extra in (
        ("by_provider", "provider", ["legal_name"]),
        ("by_province", "province", []),
        ("by_hub", "hub", []),
        ("by_month", "month", []),
    ):
        yield row()
        yield row(*heading(section))
        yield row(*heading(key, *extra, "redeemed", "redemptions"))
        for group in report[section]:
            yield row(
                group[key], *(group[name] for name in extra), format_yuan(group["redeemed"]), group["redemptions"]
            )
    yield row()
    yield row(*heading("redemptions"))
    yield row(*heading(*TRAIL))
    for chunk in _chunks(trail, TRAIL_CHUNK):
        taxpayers = taxpayer_ids(organization_ids={redemption.buyer_id for redemption in chunk})
        fapiao = fapiao_numbers({redemption.invoice_ref for redemption in chunk})
        for redemption in chunk:
            yield row(
                *_trail_row(redemption, taxpayers.get(redemption.buyer_id, ""), fapiao.get(redemption.invoice_ref, ""))
            )


TRAIL_CHUNK = 1000  # redemptions whose taxpayer ids and fapiao numbers are read at once


def _chunks(rows: Iterable[Redemption], size: int) -> Iterator[list[Redemption]]:
    chunk: list[Redemption] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
