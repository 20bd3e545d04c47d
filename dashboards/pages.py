"""What each dashboard shows, built from the selectors the API answers with.

Every figure comes from the same selector (and the same money formatting,
``core.money.format_yuan``) as the API's answer to the same question, so the
two are equal by construction. Charts get plain Chart.js configurations.
"""

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.models import Invoice
from billing.periods import month_of
from billing.selectors import (
    bank_balance,
    card_hours,
    invoice_list,
    invoices_overdue,
    invoices_set_aside,
    platform_revenue_by_day,
    spend_forecast,
    statement_list,
)
from billing.serializers import StatementSerializer
from core.money import fen_to_yuan
from core.timezones import local_zone
from dashboards.formatting import local_time
from dashboards.token_charts import token_electricity_series
from marketplace.selectors import lowest_prices_now, placements_by_hub
from organizations.models import Organization
from pools.selectors import (
    heartbeats_by_hour,
    hub_capacity,
    pool_list,
    pools_awaiting_approval,
    pools_needing_attention,
    price_plans_in_force,
    utilization,
)
from pools.serializers import PoolSerializer
from vouchers.models import Voucher, VoucherProgram
from vouchers.selectors import program_burndown, program_list, program_report, voucher_list

DAY = timedelta(days=1)
USAGE_DAYS = 30  # the operator's usage and revenue by day
UTILIZATION_DAYS = 7  # the provider's utilization of each pool, by hour
CHARTED_POOLS = 12  # at most this many lines on a provider's charts: the largest pools
ATTENTION_ROWS = 200
MARKED_POINTS = 48  # lines with at most this many points mark each one, so a lone hour shows
PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def line_chart(labels: list[str], series: dict[str, list[Any]], *, y_title: str = "", stacked: bool = False) -> dict:
    kind = "bar" if stacked else "line"
    return {
        "type": kind,
        "data": {
            "labels": labels,
            "datasets": [
                {
                    "label": name,
                    "data": [float(value) if value is not None else None for value in values],
                    "borderColor": _color(index),
                    "backgroundColor": _color(index),
                    "pointRadius": 0 if len(labels) > MARKED_POINTS else 2,
                    "tension": 0.2,
                }
                for index, (name, values) in enumerate(series.items())
            ],
        },
        "options": {
            "animation": False,
            "responsive": True,
            "maintainAspectRatio": False,
            "interaction": {"mode": "index", "intersect": False},
            "scales": {
                "x": {"stacked": stacked, "ticks": {"maxTicksLimit": 12}},
                "y": {"stacked": stacked, "beginAtZero": True, "title": {"display": bool(y_title), "text": y_title}},
            },
        },
    }


def _days(start: datetime, count: int) -> list[str]:
    return [(start + DAY * n).date().isoformat() for n in range(count)]


# --- operator --------------------------------------------------------------------


def operator_page(*, organization: Organization, now: datetime) -> dict[str, Any]:
    prices = lowest_prices_now(now=now)
    hubs = [{**hub, "price_now": prices.get(hub["code"])} for hub in hub_capacity()]

    placements = placements_by_hub(since=now - DAY, until=now)
    by_hub: dict[str, dict[str, int]] = {hub["code"]: {"leases": 0, "cards": 0} for hub in hubs}
    hours = [(now - DAY).replace(minute=0, second=0, microsecond=0) + timedelta(hours=n) for n in range(25)]
    per_hour: dict[str, dict[datetime, int]] = defaultdict(dict)
    for row in placements:
        by_hub[row["hub"]]["leases"] += row["leases"]
        by_hub[row["hub"]]["cards"] += row["cards"]
        per_hour[row["hub"]][row["hour"]] = row["leases"]
    placements_chart = line_chart(
        [local_time(hour, "H:00") for hour in hours],
        {hub["code"]: [per_hour[hub["code"]].get(hour, 0) for hour in hours] for hub in hubs},
        y_title="leases placed",
        stacked=True,
    )

    start = _local_midnight(now) - DAY * (USAGE_DAYS - 1)
    labels = _days(start, USAGE_DAYS)
    used = card_hours(organization=organization, start=start, end=now, granularity="day")
    usage = {row["period_start"].date().isoformat(): row["card_hours"] for row in used}
    revenue = {row["day"].date().isoformat(): row["revenue"] for row in platform_revenue_by_day(start=start, end=now)}
    days = [{"day": day, "card_hours": _hours(usage.get(day, 0)), "revenue": revenue.get(day, 0)} for day in labels]
    usage_chart = line_chart(labels, {"card-hours": [day["card_hours"] for day in days]}, y_title="card-hours")
    revenue_chart = line_chart(
        labels, {"platform revenue (CNY)": [fen_to_yuan(day["revenue"]) for day in days]}, y_title="CNY"
    )

    pending = pools_awaiting_approval(organization=organization)
    pending_rows = list(pending[:ATTENTION_ROWS])
    attention = pools_needing_attention(organization=organization, now=now).order_by("status", "hub_id", "name")
    attention_rows = list(attention[:ATTENTION_ROWS])
    overdue = invoices_overdue(organization=organization, now=now)
    overdue_rows = list(overdue[:ATTENTION_ROWS])
    set_aside = invoices_set_aside(organization=organization)
    set_aside_rows = list(set_aside[:ATTENTION_ROWS])
    return {
        "hubs": hubs,
        "hub_rows": [
            ("East: real-time work near its users", [hub for hub in hubs if hub["region"] == "east"]),
            ("West: cheap green power for batch work and training", [hub for hub in hubs if hub["region"] == "west"]),
        ],
        "placements": [{"hub": code, **totals} for code, totals in by_hub.items()],
        "placements_chart": placements_chart,
        "token_electricity_chart": line_chart(*token_electricity_series(now=now), y_title="CNY per million tokens"),
        "days": list(reversed(days)),
        "usage_chart": usage_chart,
        "revenue_chart": revenue_chart,
        "pending": _pools(pending_rows, now),
        "pending_count": _count(pending, pending_rows),
        "attention": _pools(attention_rows, now),
        "attention_count": _count(attention, attention_rows),
        "overdue": overdue_rows,
        "overdue_count": _count(overdue, overdue_rows),
        "set_aside": set_aside_rows,
        "set_aside_count": _count(set_aside, set_aside_rows),
    }


def _count(rows: Any, first: list[Any]) -> int:
    """How many ``rows`` there are, counting in the database only when the page shows the first of many."""
    return rows.count() if len(first) == ATTENTION_ROWS else len(first)


def _local_midnight(now: datetime) -> datetime:
    """Midnight today in the billing time zone: days are billing days."""
    local = now.astimezone(local_zone())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _hours(value: Decimal | int) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"))


def _pools(pools: list[Any], now: datetime) -> list[dict[str, Any]]:
    plans = price_plans_in_force(pool_ids=[pool.pk for pool in pools], at=now)
    return list(PoolSerializer(pools, many=True, context={"plans": plans}).data)


# --- issuer ----------------------------------------------------------------------


REPORT_TOTALS = [
    ("Budget", "budget"),
    ("Granted", "granted"),
    ("Redeemed", "redeemed"),
    ("Outstanding on vouchers", "outstanding"),
    ("Expired", "expired"),
    ("Revoked", "revoked"),
    ("Left to grant", "left"),
]


def issuer_page(*, organization: Organization) -> dict[str, Any]:
    return {"programs": list(program_list(organization=organization).order_by("-created_at", "pk"))}


def program_page(*, program: VoucherProgram, now: datetime) -> dict[str, Any]:
    report = program_report(program=program)
    burndown = program_burndown(program=program, until=now)
    chart = line_chart(
        [day["day"] for day in burndown],
        {
            name: [fen_to_yuan(day[key]) for day in burndown]
            for name, key in (
                ("left to grant", "left"),
                ("granted", "granted"),
                ("redeemed", "redeemed"),
                ("outstanding on vouchers", "outstanding"),
                ("expired", "expired"),
                ("revoked", "revoked"),
            )
        },
        y_title="CNY",
    )
    return {
        "program": program,
        "report": report,
        "burndown": burndown[-1] if burndown else None,
        "burndown_chart": chart,
        "top_companies": report["by_company"][:10],
        "totals": [(label, key, report[key]) for label, key in REPORT_TOTALS],
        "spend_sections": [
            {
                "key": key,
                "title": title,
                "rows": report[f"by_{key}"],
                "chart": _bar(report[f"by_{key}"], key),
            }
            for key, title in (("province", "company's province"), ("hub", "hub"), ("provider", "provider"))
        ],
    }


def _bar(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    redeemed = [fen_to_yuan(row["redeemed"]) for row in rows]
    chart = line_chart([row[key] for row in rows], {"redeemed (CNY)": redeemed}, y_title="CNY")
    chart["type"] = "bar"
    return chart


# --- buyer -----------------------------------------------------------------------


def buyer_page(*, organization: Organization, now: datetime) -> dict[str, Any]:
    period_start, period_end = month_of(now)
    invoices = invoice_list(organization=organization)
    draft = invoices.filter(status=Invoice.Status.DRAFT, period_start=period_start).first()
    spend = spend_forecast(invoice=draft, now=now) if draft else {"so_far": 0, "forecast": 0, "leases": []}
    vouchers = list(
        voucher_list(organization=organization)
        .filter(status__in=Voucher.LIVE)
        .order_by("valid_until", "created_at", "pk")
    )
    return {
        "period_start": period_start,
        "period_end": period_end,
        "spend": spend,
        "draft": draft,
        "vouchers": vouchers,
        "vouchers_left": sum(voucher.remaining for voucher in vouchers if voucher.status == Voucher.Status.ACTIVE),
        "bank_credit": bank_balance(organization=organization),
        "invoices": list(invoices.exclude(status=Invoice.Status.DRAFT).order_by("-period_start")),
    }


# --- provider --------------------------------------------------------------------


def provider_page(*, organization: Organization, now: datetime) -> dict[str, Any]:
    pools = list(pool_list(organization=organization).order_by("-cards", "name", "pk"))
    charted = pools[:CHARTED_POOLS]
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=24 * UTILIZATION_DAYS - 1)
    hours = [start + timedelta(hours=n) for n in range(24 * UTILIZATION_DAYS)]
    used: dict[Any, dict[datetime, Decimal]] = defaultdict(dict)
    for row in card_hours(organization=organization, start=start, end=now, granularity="hour", by_pool=True):
        used[row["pool_id"]][row["period_start"]] = row["card_hours"]
    utilization_chart = line_chart(
        [local_time(hour, "m-d H:00") for hour in hours],
        {
            label: [round(float(used[pool.pk].get(hour, 0)) * 100 / pool.cards, 2) for hour in hours]
            for label, pool in zip(_labels(charted), charted, strict=True)
        },
        y_title="% of cards used",
    )

    beats = heartbeats_by_hour(pool_ids=[pool.pk for pool in pools], since=hours[-24])
    heartbeat_chart = line_chart(
        [local_time(hour, "H:00") for hour in hours[-24:]],
        {
            label: [_fewest(beats[pool.pk], hour) for hour in hours[-24:]]
            for label, pool in zip(_labels(charted), charted, strict=True)
        },
        y_title="fewest healthy cards in the hour",
    )

    statements = list(StatementSerializer(statement_list(organization=organization)[:24], many=True).data)
    earnings_chart = _earnings_chart(list(reversed(statements)))
    rows = []
    for pool, data in zip(pools, _pools(pools, now), strict=True):
        total = sum(used[pool.pk].values(), Decimal(0))
        rows.append(
            {
                **data,
                "utilization_now": utilization(pool.reserved_cards, pool.cards),
                "card_hours": _hours(total),
                "utilization_window": utilization(total, pool.cards * 24 * UTILIZATION_DAYS),
                "heartbeats": sum(count for _, _, count in beats[pool.pk]),
            }
        )
    return {
        "pools": rows,
        "window_start": start,
        "utilization_chart": utilization_chart,
        "heartbeat_chart": heartbeat_chart,
        "statements": statements,
        "earnings_chart": earnings_chart,
        "charted_pools": len(charted),
    }


def _fewest(beats: list[tuple[datetime, int, int]], hour: datetime) -> int | None:
    return next((fewest for at, fewest, _ in beats if at == hour), None)


def _labels(pools: list[Any]) -> list[str]:
    """Pool names, told apart by their ids' first characters where two share a name."""
    names = [pool.name for pool in pools]
    return [pool.name if names.count(pool.name) == 1 else f"{pool.name} ({str(pool.pk)[:8]})" for pool in pools]


def _earnings_chart(statements: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [local_time(statement["period_start"], "Y-m") for statement in statements]
    chart = line_chart(
        labels,
        {
            "net payable": [Decimal(statement["net"]) for statement in statements],
            "commission": [Decimal(statement["commission"]) for statement in statements],
        },
        y_title="CNY",
        stacked=True,
    )
    return chart
