"""The issuer's report as CSV for the funding body, in sections: the totals; spend by
company, provider, province, hub and month; then every redemption with the invoice line, lease and
usage it paid for. Streamed row by row, so a program of any size fits."""

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from core.money import format_yuan
from core.timezones import local_zone
from organizations.selectors import taxpayer_ids
from vouchers.documents import fapiao_numbers
from vouchers.models import Redemption

# A cell starting with one of these is a formula to a spreadsheet; names come from users.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

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
    yield row("program", program.name)
    yield row("program_id", program.pk)
    yield row("issuer", program.issuer.legal_name)
    yield row("currency", report["currency"])
    yield row("coverage_share", program.coverage_share)
    yield row()
    yield row("totals")
    yield row(*TOTALS)
    yield row(*(format_yuan(report[name]) for name in TOTALS))
    yield row()
    yield row("by_company")
    yield row(
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
        yield row(section)
        yield row(key, *extra, "redeemed", "redemptions")
        for group in report[section]:
            yield row(
                group[key], *(group[name] for name in extra), format_yuan(group["redeemed"]), group["redemptions"]
            )
    yield row()
    yield row("redemptions")
    yield row(*TRAIL)
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
