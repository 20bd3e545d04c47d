"""What each dashboard shows, built from the selectors the API answers with.

Every figure comes from the same selector as the API's answer to the same question, so the two
are equal by construction; the templates show it in the one format of ``dashboards.formatting``
and keep the API's exact figure beside it (``data-value``). Charts get plain Chart.js
configurations and a text alternative each; long lists are paginated (``?<list>_page=N``).
"""

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from billing.models import Invoice
from billing.periods import month_of
from billing.selectors import (
    bank_balance,
    card_hours,
    deposits_overview,
    fapiao_waiting,
    invoice_days_overdue,
    invoice_due_at,
    invoice_list,
    invoice_owed,
    invoices_overdue,
    invoices_overdue_total,
    invoices_set_aside,
    platform_revenue_by_day,
    provider_accrued,
    reserved_capacity,
    spend_by_day,
    spend_forecast,
    statement_list,
)
from billing.serializers import StatementSerializer
from core.money import fen_to_yuan, round_to_fen
from core.timezones import local_zone
from dashboards.formatting import local_time, money, percent, price, quantity
from dashboards.token_charts import token_electricity_series
from marketplace.selectors import lowest_prices_by_model, placements_by_hub
from organizations.models import Organization
from pools.models import GpuModel, Hub
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
from vouchers.charges import ChargeLine
from vouchers.models import Voucher, VoucherProgram
from vouchers.selectors import (
    program_burndown,
    program_list,
    program_report,
    programs_spent,
    voucher_estimates,
    voucher_list,
)

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
USAGE_DAYS = 30  # the operator's usage and revenue by day
UTILIZATION_DAYS = 7  # the provider's utilization of each pool, by hour
PAGE_ROWS = 10  # rows of a list before it pages
NAMED_ROWS = 8  # spend by province or provider: the largest by name, the rest as one row
MARKED_POINTS = 48  # lines with at most this many points mark each one, so a lone hour shows
# Colour-blind-safe (Okabe-Ito), for the few series a chart has.
PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"]

Params = Mapping[str, str]


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def line_chart(
    labels: list[str],
    series: dict[str, list[Any]],
    *,
    y_title: str = "",
    stacked: bool = False,
    dashed: frozenset[str] = frozenset(),
    hide_zero: bool = False,
) -> dict:
    """A Chart.js configuration; ``hide_zero`` leaves out the series that are zero throughout."""
    if hide_zero:
        series = {name: values for name, values in series.items() if any(values)} or series
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
                    "borderDash": [6, 4] if name in dashed else [],
                    "pointRadius": 0 if len(labels) > MARKED_POINTS else 2,
                    "tension": 0.2,
                    "spanGaps": False,
                }
                for index, (name, values) in enumerate(series.items())
            ],
        },
        "options": {
            "animation": False,
            "responsive": True,
            "maintainAspectRatio": False,
            "interaction": {"mode": "index", "intersect": False},
            "plugins": {"legend": {"labels": {"boxWidth": 12}}},
            "scales": {
                "x": {"stacked": stacked, "ticks": {"maxTicksLimit": 8}},
                "y": {"stacked": stacked, "beginAtZero": True, "title": {"display": bool(y_title), "text": y_title}},
            },
        },
    }


def bar_chart(labels: list[str], values: list[Any], *, name: str, y_title: str = "") -> dict:
    chart = line_chart(labels, {name: values}, y_title=y_title)
    chart["type"] = "bar"
    return chart


def _days(start: datetime, count: int) -> list[str]:
    return [(start + DAY * n).date().isoformat() for n in range(count)]


def paged(rows: QuerySet[Any] | list[Any], params: Params, name: str) -> Page:
    """The page of ``rows`` that ``?<name>_page=N`` asks for (the first, or the last if past it)."""
    return Paginator(rows, PAGE_ROWS).get_page(params.get(f"{name}_page"))


def _local_midnight(now: datetime) -> datetime:
    """Midnight today in the billing time zone: days are billing days."""
    local = now.astimezone(local_zone())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _hours(value: Decimal | int) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"))


def _pools(pools: list[Any], now: datetime) -> list[dict[str, Any]]:
    plans = price_plans_in_force(pool_ids=[pool.pk for pool in pools], at=now)
    return list(PoolSerializer(pools, many=True, context={"plans": plans}).data)


def _hub_names() -> dict[str, str]:
    return {hub.code: hub.local_name for hub in Hub.objects.only("code", "name", "name_zh")}


def _invoice_rows(invoices: list[Invoice], now: datetime) -> list[dict[str, Any]]:
    """Invoices with their due date, what they still owe and how many days they are overdue."""
    return [
        {
            "invoice": invoice,
            "due_at": invoice_due_at(invoice),
            "owed": invoice_owed(invoice),
            "days_overdue": invoice_days_overdue(invoice, now=now),
        }
        for invoice in invoices
    ]


# --- operator --------------------------------------------------------------------


def operator_page(*, organization: Organization, now: datetime, params: Params) -> dict[str, Any]:
    hubs = hub_capacity()

    placements = placements_by_hub(since=now - DAY, until=now)
    by_hub: dict[str, dict[str, int]] = {hub["code"]: {"leases": 0, "cards": 0} for hub in hubs}
    hours = [(now - DAY).replace(minute=0, second=0, microsecond=0) + HOUR * n for n in range(25)]
    per_hour: dict[str, dict[datetime, int]] = defaultdict(dict)
    for row in placements:
        by_hub[row["hub"]]["leases"] += row["leases"]
        by_hub[row["hub"]]["cards"] += row["cards"]
        per_hour[row["hub"]][row["hour"]] = row["leases"]
    placed = {hub["name"]: [per_hour[hub["code"]].get(hour, 0) for hour in hours] for hub in hubs}
    placements_chart = line_chart(
        [local_time(hour, "H:00") for hour in hours],
        {name: values for name, values in placed.items() if any(values)} or placed,
        y_title=_("leases placed"),
        stacked=True,
    )

    start = _local_midnight(now) - DAY * (USAGE_DAYS - 1)
    labels = _days(start, USAGE_DAYS)
    used = card_hours(organization=organization, start=start, end=now, granularity="day")
    usage = {row["period_start"].date().isoformat(): row["card_hours"] for row in used}
    revenue = {row["day"].date().isoformat(): row["revenue"] for row in platform_revenue_by_day(start=start, end=now)}
    days = [{"day": day, "card_hours": _hours(usage.get(day, 0)), "revenue": revenue.get(day, 0)} for day in labels]
    usage_chart = line_chart(labels, {_("card-hours"): [day["card_hours"] for day in days]}, y_title=_("card-hours"))
    revenue_chart = line_chart(
        labels, {_("platform revenue (¥)"): [fen_to_yuan(day["revenue"]) for day in days]}, y_title="¥"
    )

    pending = pools_awaiting_approval(organization=organization)
    attention = pools_needing_attention(organization=organization, now=now).order_by("status", "hub_id", "name")
    overdue = invoices_overdue(organization=organization, now=now).select_related("buyer")
    pending_page, attention_page = paged(pending, params, "pending"), paged(attention, params, "attention")
    overdue_page = paged(overdue, params, "overdue")
    set_aside_page = paged(invoices_set_aside(organization=organization).select_related("buyer"), params, "set_aside")
    fapiao_page = paged(fapiao_waiting(), params, "fapiao")

    cards = sum(hub["cards"] for hub in hubs)
    reserved = sum(hub["reserved_cards"] for hub in hubs)
    month = month_of(now)
    strip = {
        "reserved_capacity": reserved_capacity(start=month[0], end=month[1])[None],
        "pools": sum(hub["pools"] for hub in hubs),
        "cards": cards,
        "reserved": reserved,
        "utilization": utilization(reserved, cards),
        "revenue_today": days[-1]["revenue"],
        "card_hours_today": days[-1]["card_hours"],
        "overdue_total": invoices_overdue_total(overdue),
        "overdue_count": overdue_page.paginator.count,
        "attention_count": attention_page.paginator.count,
        "pending_count": pending_page.paginator.count,
    }
    return {
        "strip": strip,
        "hubs": hubs,
        "hub_rows": [
            (_("East: real-time work near its users"), [hub for hub in hubs if hub["region"] == "east"]),
            (
                _("West: cheap green power for batch work and training"),
                [hub for hub in hubs if hub["region"] == "west"],
            ),
        ],
        "prices": _prices_by_model(hubs, now),
        "placements": [{"hub": hub["code"], "name": hub["name"], **by_hub[hub["code"]]} for hub in hubs],
        "placements_chart": placements_chart,
        "placements_label": _chart_text(_("Leases placed in the last day, by hub"), placed),
        **_token_electricity(hubs, now),
        "days": list(reversed(days)),
        "usage_chart": usage_chart,
        "usage_label": _("Card-hours used each day, last %(days)s days: %(total)s in all, %(today)s today")
        % {
            "days": USAGE_DAYS,
            "total": quantity(sum(day["card_hours"] for day in days)),
            "today": quantity(days[-1]["card_hours"]),
        },
        "revenue_chart": revenue_chart,
        "revenue_label": _("Platform revenue each day, last %(days)s days: %(total)s in all, %(today)s today")
        % {
            "days": USAGE_DAYS,
            "total": money(sum(day["revenue"] for day in days)),
            "today": money(days[-1]["revenue"]),
        },
        "pending": _pools(list(pending_page.object_list), now),
        "pending_page": pending_page,
        "pending_count": pending_page.paginator.count,
        "attention": _pools(list(attention_page.object_list), now),
        "attention_page": attention_page,
        "attention_count": attention_page.paginator.count,
        "overdue": _invoice_rows(list(overdue_page.object_list), now),
        "overdue_page": overdue_page,
        "overdue_count": overdue_page.paginator.count,
        "set_aside": list(set_aside_page.object_list),
        "set_aside_page": set_aside_page,
        "set_aside_count": set_aside_page.paginator.count,
        "fapiao_waiting": list(fapiao_page.object_list),
        "fapiao_page": fapiao_page,
        "fapiao_count": fapiao_page.paginator.count,
        "hub_names": {hub["code"]: hub["name"] for hub in hubs},
    }


def _prices_by_model(hubs: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Each GPU model offered anywhere: its lowest price now in each hub, the cheapest marked."""
    lowest = lowest_prices_by_model(now=now)
    models = GpuModel.objects.in_bulk({model for _, model in lowest})
    rows = []
    for code in sorted(models, key=lambda code: (models[code].vendor, code)):
        prices = [lowest.get((hub["code"], code)) for hub in hubs]
        cheapest = min(price for price in prices if price is not None)
        rows.append(
            {
                "gpu": code,
                "name": models[code].name,
                "prices": [
                    {"hub": hub["code"], "price": price, "cheapest": price == cheapest}
                    for hub, price in zip(hubs, prices, strict=True)
                ],
            }
        )
    return rows


def _token_electricity(hubs: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The chart of electricity cost per million tokens by hub over the last day, hubs by name."""
    hours, series = token_electricity_series(now=now)
    names = {hub["code"]: hub["name"] for hub in hubs}
    lines = {names.get(code, code): values for code, values in series.items()}
    latest = [
        f"{name} {price(known[-1])}"
        for name, values in lines.items()
        if (known := [v for v in values if v is not None])
    ]
    return {
        "token_electricity_chart": line_chart(hours, lines, y_title=_("CNY per million tokens")),
        "token_electricity_label": _("Electricity cost per million tokens by hub, last 24 hours, latest: %(hubs)s.")
        % {"hubs": ", ".join(latest) or _("none")},
    }


def _chart_text(title: str, series: dict[str, list[Any]]) -> str:
    """A chart's text alternative: its title and each series' total."""
    parts = [f"{name} {quantity(sum(values))}" for name, values in series.items() if any(values)]
    return f"{title}: {', '.join(parts) or _('none')}."


# --- issuer ----------------------------------------------------------------------


REPORT_TOTALS = [
    (gettext_noop("Budget"), "budget"),
    (gettext_noop("Granted"), "granted"),
    (gettext_noop("Redeemed"), "redeemed"),
    (gettext_noop("Outstanding on vouchers"), "outstanding"),
    (gettext_noop("Expired"), "expired"),
    (gettext_noop("Revoked"), "revoked"),
    (gettext_noop("Rejected in claims"), "rejected"),
    (gettext_noop("Left to grant"), "left"),
]


def issuer_page(*, organization: Organization) -> dict[str, Any]:
    programs = list(program_list(organization=organization).order_by("-created_at", "pk"))
    spent = programs_spent(programs=programs)
    rows = []
    for program in programs:
        figures = spent.get(program.pk, {"redeemed": 0, "companies": 0})
        rows.append(
            {
                "program": program,
                "redeemed": figures["redeemed"],
                "companies": figures["companies"],
                "committed_share": Decimal(program.committed) / program.budget if program.budget else Decimal(0),
                "redeemed_share": Decimal(figures["redeemed"]) / program.budget if program.budget else Decimal(0),
            }
        )
    return {"programs": rows}


def program_page(*, program: VoucherProgram, now: datetime) -> dict[str, Any]:
    report = program_report(program=program)
    burndown = program_burndown(program=program, until=now)
    chart, label = _burndown_chart(program, burndown, now)
    names = _hub_names()
    sections = []
    for key, title in (("province", _("company's province")), ("hub", _("hub")), ("provider", _("provider"))):
        rows = _named_rows(report[f"by_{key}"], key, names)
        sections.append(
            {
                "key": key,
                "title": title,
                "rows": rows,
                "chart": bar_chart(
                    [row["name"] for row in rows],
                    [fen_to_yuan(row["redeemed"]) for row in rows],
                    name=_("redeemed (¥)"),
                    y_title="¥",
                ),
                "label": _("Redeemed by %(what)s: %(rows)s.")
                % {"what": title, "rows": ", ".join(f"{row['name']} {money(row['redeemed'])}" for row in rows) or "-"},
            }
        )
    return {
        "program": program,
        "report": report,
        "burndown": burndown[-1] if burndown else None,
        "burndown_chart": chart,
        "burndown_label": label,
        "companies": sum(1 for row in report["by_company"] if row["redeemed"]),
        "top_companies": report["by_company"][:10],
        "totals": [(_(label), key, report[key]) for label, key in REPORT_TOTALS],
        "spend_sections": sections,
    }


def _named_rows(rows: list[dict[str, Any]], key: str, hub_names: dict[str, str]) -> list[dict[str, Any]]:
    """Spend rows by name (a provider's legal name, a hub's name), the largest ``NAMED_ROWS`` and the
    rest as one row."""
    named = [
        {
            **row,
            "key": row[key],
            "name": row.get("legal_name") or (hub_names.get(row[key], row[key]) if key == "hub" else row[key]),
        }
        for row in rows
    ]
    if len(named) <= NAMED_ROWS + 1:
        return named
    rest = named[NAMED_ROWS:]
    other = {
        "key": "",
        "name": _("%(count)s others") % {"count": len(rest)},
        "redeemed": sum(row["redeemed"] for row in rest),
        "redemptions": sum(row["redemptions"] for row in rest),
        "others": True,
    }
    return [*named[:NAMED_ROWS], other]


def _burndown_chart(program: VoucherProgram, burndown: list[dict[str, Any]], now: datetime) -> tuple[dict, str]:
    """The budget over the program's whole validity, day by day: each series up to today, and the
    pace that would redeem the whole budget evenly by the program's end (dashed)."""
    zone = local_zone()
    first = program.valid_from.astimezone(zone).date()
    last = program.valid_until.astimezone(zone).date()
    today = now.astimezone(zone).date()
    by_day = {date.fromisoformat(row["day"]): row for row in burndown}
    if by_day:
        first = min(first, min(by_day))
    days = [first + DAY * n for n in range((max(last, today) - first).days + 1)]
    keys = [
        (_("left to grant"), "left"),
        (_("granted"), "granted"),
        (_("redeemed"), "redeemed"),
        (_("outstanding on vouchers"), "outstanding"),
        (_("expired"), "expired"),
        (_("revoked"), "revoked"),
        (_("rejected in claims"), "rejected"),
    ]
    current = dict.fromkeys(("granted", "redeemed", "outstanding", "expired", "revoked", "rejected"), 0)
    current["left"] = program.budget
    series: dict[str, list[Any]] = {name: [] for name, _key in keys}
    for day in days:
        current = by_day.get(day, current)
        for name, key in keys:
            series[name].append(fen_to_yuan(current[key]) if day <= today else None)
    span = max((last - program.valid_from.astimezone(zone).date()).days, 1)
    pace = _("target pace (redeemed)")
    start = program.valid_from.astimezone(zone).date()
    series[pace] = [
        fen_to_yuan(round_to_fen(Decimal(program.budget) / 100 * min(max((day - start).days, 0), span) / span))
        for day in days
    ]
    chart = line_chart([day.isoformat() for day in days], series, y_title="¥", dashed=frozenset({pace}), hide_zero=True)
    end = by_day.get(today) or (burndown[-1] if burndown else current)
    label = _(
        "Budget of %(budget)s from %(start)s to %(end)s: %(redeemed)s redeemed and %(left)s left to grant by "
        "%(today)s, against %(pace)s at an even pace."
    ) % {
        "budget": money(program.budget),
        "start": first.isoformat(),
        "end": last.isoformat(),
        "redeemed": money(end["redeemed"]),
        "left": money(end["left"]),
        "today": today.isoformat(),
        "pace": money(round_to_fen(Decimal(program.budget) / 100 * min(max((today - start).days, 0), span) / span)),
    }
    return chart, label


# --- buyer -----------------------------------------------------------------------


def buyer_page(*, organization: Organization, now: datetime) -> dict[str, Any]:
    period_start, period_end = month_of(now)
    invoices = invoice_list(organization=organization)
    draft = invoices.filter(status=Invoice.Status.DRAFT, period_start=period_start).first()
    spend: dict[str, Any] = (
        spend_forecast(invoice=draft, now=now) if draft else {"so_far": 0, "forecast": 0, "leases": []}
    )
    vouchers = list(
        voucher_list(organization=organization)
        .filter(status__in=Voucher.LIVE)
        .select_related("program")
        .order_by("valid_until", "created_at", "pk")
    )
    credit = bank_balance(organization=organization, at=now)
    by_vouchers = _vouchers_of_forecast(organization, spend["leases"], period_start, period_end, now)
    by_bank = min(credit, spend["forecast"] - by_vouchers)
    chart, label = _spend_chart(draft, spend, period_start, period_end, now) if draft else ({}, "")
    finalized = list(
        invoices.exclude(status=Invoice.Status.DRAFT).prefetch_related("fapiao_requests").order_by("-period_start")
    )
    rows = _invoice_rows(finalized, now)
    overdue = [row for row in rows if row["days_overdue"] is not None]
    return {
        "period_start": period_start,
        "period_end": period_end,
        "period_last_day": period_end - DAY,
        "spend": spend,
        "forecast_vouchers": by_vouchers,
        "forecast_bank": by_bank,
        "forecast_to_pay": spend["forecast"] - by_vouchers - by_bank,
        "spend_chart": chart,
        "spend_label": label,
        "draft": draft,
        "vouchers": vouchers,
        "vouchers_left": sum(voucher.remaining for voucher in vouchers if voucher.status == Voucher.Status.ACTIVE),
        "bank_credit": credit,
        "invoices": rows,
        "overdue": overdue,
        "overdue_total": sum(row["owed"] for row in overdue),
        "reserved": reserved_capacity(start=period_start, end=period_end, buyer=organization)[None],
        "deposits": deposits_overview(buyer=organization),
    }


def _vouchers_of_forecast(
    buyer: Organization, leases: list[dict[str, Any]], period_start: datetime, period_end: datetime, now: datetime
) -> int:
    """What the buyer's vouchers would pay of the forecast, by the rules they pay invoices by
    (``vouchers.selectors.voucher_estimates``)."""
    if not leases:
        return 0
    lines = [
        ChargeLine(
            line_ref=str(row["lease"].pk),
            amount=row["forecast"],
            lease_id=str(row["lease"].pk),
            pool_id=str(row["lease"].pool_id),
            provider_id=str(row["lease"].provider_id),
            hub=row["lease"].pool.hub_id,
            gpu_model=row["lease"].pool.gpu_model_id,
            workload=row["lease"].workload,
            period_start=period_start,
            period_end=period_end,
        )
        for row in leases
    ]
    return voucher_estimates(buyer=buyer, alternatives=[lines], at=now)[0]


def _spend_chart(
    draft: Invoice, spend: dict[str, Any], period_start: datetime, period_end: datetime, now: datetime
) -> tuple[dict, str]:
    """Spend so far, cumulative by day, and the forecast's line from today to the period's end."""
    zone = local_zone()
    first, last = period_start.astimezone(zone).date(), (period_end - DAY).astimezone(zone).date()
    today = now.astimezone(zone).date()
    spent = spend_by_day(invoice=draft)
    days = [first + DAY * n for n in range((last - first).days + 1)]
    so_far: list[Decimal | None] = []
    forecast: list[Decimal | None] = []
    total = Decimal(0)
    to_come = Decimal(spend["forecast"] - spend["so_far"]) / 100
    days_left = max((last - today).days, 0)
    for day in days:
        total += spent.get(day, Decimal(0))
        so_far.append(total.quantize(Decimal("0.01")) if day <= today else None)
    base = fen_to_yuan(spend["so_far"])
    for day in days:
        if day < today:
            forecast.append(None)
        else:
            ahead = (day - today).days
            forecast.append((base + to_come * ahead / days_left).quantize(Decimal("0.01")) if days_left else base)
    cumulative, forecast_name = _("spent, cumulative"), _("forecast")
    chart = line_chart(
        [day.isoformat() for day in days],
        {cumulative: so_far, forecast_name: forecast},
        y_title="¥",
        dashed=frozenset({forecast_name}),
    )
    label = _("Spend this month by day, cumulative: %(spent)s by %(today)s, %(forecast)s forecast by %(last)s.") % {
        "spent": money(spend["so_far"]),
        "today": today.isoformat(),
        "forecast": money(spend["forecast"]),
        "last": last.isoformat(),
    }
    return chart, label


# --- provider --------------------------------------------------------------------


def provider_page(*, organization: Organization, now: datetime) -> dict[str, Any]:
    pools = list(pool_list(organization=organization).order_by("-cards", "name", "pk"))
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    start = this_hour - HOUR * (24 * UTILIZATION_DAYS - 1)
    hours = [start + HOUR * n for n in range(24 * UTILIZATION_DAYS)]
    used: dict[Any, dict[datetime, Decimal]] = defaultdict(dict)
    for row in card_hours(organization=organization, start=start, end=now, granularity="hour", by_pool=True):
        used[row["pool_id"]][row["period_start"]] = row["card_hours"]
    # The hour under way is not over: its usage is still coming in, so it is not drawn (nor a drop to zero).
    finished = hours[:-1]
    names = _hub_names()
    day_spans: dict[str, int] = {}
    for hour in finished:
        day = local_time(hour, "m-d")
        day_spans[day] = day_spans.get(day, 0) + 1
    heatmap = {
        "days": [{"label": day, "span": span} for day, span in day_spans.items()],
        "rows": [
            {
                "label": label,
                "cells": [_heat_cell(used[pool.pk].get(hour, Decimal(0)), pool.cards, hour) for hour in finished],
            }
            for label, pool in zip(_labels(pools), pools, strict=True)
        ],
    }
    beats = heartbeats_by_hour(pool_ids=[pool.pk for pool in pools], since=hours[-24])
    statements = list(StatementSerializer(statement_list(organization=organization)[:24], many=True).data)
    earnings_chart = _earnings_chart(list(reversed(statements)))
    rows = []
    for pool, data in zip(pools, _pools(pools, now), strict=True):
        total = sum(used[pool.pk].values(), Decimal(0))
        rows.append(
            {
                **data,
                "hub_name": names.get(data["hub"], data["hub"]),
                "utilization_now": utilization(pool.reserved_cards, pool.cards),
                "card_hours": _hours(total),
                "utilization_window": utilization(total, pool.cards * 24 * UTILIZATION_DAYS),
                "heartbeats": sum(count for _, _, count in beats[pool.pk]),
            }
        )
    return {
        "pools": rows,
        "window_start": start,
        "heatmap": heatmap,
        "heatmap_label": _("Share of each pool's cards used, hour by hour over the last %(days)s days: %(pools)s.")
        % {
            "days": UTILIZATION_DAYS,
            "pools": ", ".join(f"{row['name']} {percent(row['utilization_window'])}" for row in rows) or _("no pools"),
        },
        "statements": statements,
        "earnings_chart": earnings_chart,
        "earnings_label": _("Net payable and commission by month: %(months)s.")
        % {"months": ", ".join(f"{local_time(s['period_start'], 'Y-m')} {money(s['net'])}" for s in statements)},
        "accrued": provider_accrued(organization=organization, now=now),
        "reserved_pools": _reserved_pools(pools, organization, now),
    }


def _reserved_pools(pools: list[Any], organization: Organization, now: datetime) -> list[dict[str, Any]]:
    """This month's reserved card-hours per pool: booked, used by their holders, resold from deposits."""
    start, end = month_of(now)
    by_pool = reserved_capacity(start=start, end=end, provider=organization)
    return [
        {"name": label, **by_pool[pool.pk]}
        for label, pool in zip(_labels(pools), pools, strict=True)
        if pool.pk in by_pool
    ]


HEAT_STEPS = 5  # shades of the heatmap, from idle to every card used


def _heat_cell(used: Decimal, cards: int, hour: datetime) -> dict[str, Any]:
    share = min(Decimal(used) / cards, Decimal(1)) if cards else Decimal(0)
    return {
        "level": 0 if not used else 1 + min(int(share * (HEAT_STEPS - 1)), HEAT_STEPS - 2),
        "title": f"{local_time(hour, 'm-d H:00')} {percent(share)}",
    }


def _labels(pools: list[Any]) -> list[str]:
    """Pool names, told apart by their ids' first characters where two share a name."""
    names = [pool.name for pool in pools]
    return [pool.name if names.count(pool.name) == 1 else f"{pool.name} ({str(pool.pk)[:8]})" for pool in pools]


def _earnings_chart(statements: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [local_time(statement["period_start"], "Y-m") for statement in statements]
    return line_chart(
        labels,
        {
            _("net payable"): [Decimal(statement["net"]) for statement in statements],
            _("commission"): [Decimal(statement["commission"]) for statement in statements],
        },
        y_title="¥",
        stacked=True,
    )
