"""The dashboards: login, scoping like the API, and figures equal to the API's answers."""

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.db.models import F
from django.test import Client

from billing.models import Invoice
from core.money import format_yuan
from core.timezones import local_zone
from pools.models import PricePlan, ResourcePool
from tests.billing.factories import credit
from tests.dashboards.scenario import PASSWORD, Grid, api_get, build_grid
from tests.factories import pool_factory
from tests.pdf_text import pdf_text
from vouchers.selectors import program_burndown, program_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def grid() -> Grid:
    return build_grid()


def signed_in(grid: Grid, organization: Any) -> Client:
    client = Client()
    assert client.login(username=grid.users[organization.slug], password=PASSWORD)
    return client


def figures(html: str, name: str) -> list[str]:
    """Every figure marked ``data-figure="name"`` (none of them nest): its exact value (``data-value``,
    the API's figure beside the one shown formatted) or else its text."""
    found = []
    for attributes, text in re.findall(rf'data-figure="{name}"([^>]*)>(.*?)</(?:td|dd|span|a)>', html, re.S):
        value = re.search(r'data-value="([^"]*)"', attributes)
        found.append(value[1] if value else re.sub(r"<[^>]+>", "", text).strip())
    return found


def test_a_visitor_who_is_not_signed_in_is_sent_to_the_login_page(grid) -> None:
    answer = Client().get(f"/dashboard/{grid.buyer.slug}/")

    assert answer.status_code == 302
    assert answer["Location"].startswith("/dashboard/login/?next=")


def test_signing_in_leads_a_member_to_their_organizations_dashboard(grid) -> None:
    client = Client()

    answer = client.post("/dashboard/login/", {"username": grid.users[grid.buyer.slug], "password": PASSWORD})
    assert answer.status_code == 302
    assert client.get(answer["Location"])["Location"] == f"/dashboard/{grid.buyer.slug}/"


def test_a_wrong_password_is_refused_with_a_message(grid) -> None:
    answer = Client().post("/dashboard/login/", {"username": grid.users[grid.buyer.slug], "password": "nope"})

    assert answer.status_code == 200
    assert b'data-error="login"' in answer.content


@pytest.mark.parametrize("kind", ["operator", "issuer", "buyer", "provider"])
def test_a_member_of_one_organization_cannot_open_anothers_pages(grid, kind) -> None:
    client = signed_in(grid, grid.other_buyer)
    organization = getattr(grid, kind)

    assert client.get(f"/dashboard/{organization.slug}/").status_code == 404
    assert client.get(f"/dashboard/{grid.other_buyer.slug}/").status_code == 200


def test_another_buyers_invoice_answers_404_even_under_ones_own_page(grid) -> None:
    client = signed_in(grid, grid.other_buyer)

    assert client.get(f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.invoice.pk}/").status_code == 404
    assert client.get(f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.invoice.pk}/pdf/").status_code == 404
    assert client.get(f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/").status_code == 200


def test_another_issuers_program_answers_404(grid, issuer) -> None:
    from organizations.services import member_set

    member_set(organization=issuer, username="someone-else", password=PASSWORD)
    client = Client()
    client.login(username="someone-else", password=PASSWORD)

    assert client.get(f"/dashboard/{issuer.slug}/programs/{grid.program.pk}/").status_code == 404
    assert client.get(f"/dashboard/{issuer.slug}/programs/{grid.program.pk}/report.csv").status_code == 404


def test_a_buyer_has_no_program_pages_and_an_issuer_no_invoice_pages(grid) -> None:
    buyer, issuer = signed_in(grid, grid.buyer), signed_in(grid, grid.issuer)

    assert buyer.get(f"/dashboard/{grid.buyer.slug}/programs/{grid.program.pk}/").status_code == 404
    assert issuer.get(f"/dashboard/{grid.issuer.slug}/invoices/{grid.invoice.pk}/").status_code == 404


def test_the_operator_page_shows_each_hubs_cards_and_utilization_as_the_pools_api_sums_them(grid, make_client) -> None:
    api = make_client(grid.operator)
    pools = api_get(api, "/api/v1/pools/?status=active&hub=jingjinji&page_size=500")

    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")

    assert answer.status_code == 200
    hub = next(hub for hub in answer.context["hubs"] if hub["code"] == "jingjinji")
    assert hub["cards"] == sum(pool["cards"] for pool in pools) > 0
    assert hub["reserved_cards"] == sum(pool["reserved_cards"] for pool in pools) > 0
    assert hub["utilization"] == (Decimal(hub["reserved_cards"]) / hub["cards"]).quantize(Decimal("0.0001"))
    assert len(answer.context["hubs"]) == 8


def price_row(html: str, gpu: str) -> str:
    row = re.search(rf'<tr data-gpu="{re.escape(gpu)}">(.*?)</tr>', html, re.S)
    assert row is not None, gpu
    return row.group(1)


def test_the_operator_page_compares_the_lowest_price_now_within_each_gpu_model(grid, make_client) -> None:
    gpu = grid.lease.pool.gpu_model_id
    offers = api_get(make_client(grid.buyer), f"/api/v1/offers/?hub=jingjinji&gpu_model={gpu}&ordering=price")

    html = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/").content.decode()

    assert figures(price_row(html, gpu), "price-jingjinji") == [offers[0]["price_per_card_hour"]]
    assert figures(price_row(html, gpu), "price-ningxia") == [""]  # no offer of the model there: a dash
    assert re.search(r'class="n best"[^>]*data-hub="jingjinji"', price_row(html, gpu))


def test_the_operator_page_shows_prices_with_four_places_and_a_yuan_sign(grid) -> None:
    PricePlan.objects.filter(pool=grid.lease.pool).update(hour_prices=["0.1234550000"] * 24)  # the cheapest

    html = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/").content.decode()

    row = price_row(html, grid.lease.pool.gpu_model_id)
    assert figures(row, "price-jingjinji") == ["0.1235"]
    assert ">¥0.1235</td>" in row


def test_the_operator_page_lists_pools_waiting_for_approval_with_provider_hub_and_cards(grid) -> None:
    waiting = pool_factory(
        provider=grid.provider, hub_id="yangtze", province="Zhejiang", cards=64, status=ResourcePool.Status.PENDING
    )

    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")

    html = answer.content.decode()
    assert [pool["id"] for pool in answer.context["pending"]] == [str(waiting.pk)]
    assert figures(html, "pending-count") == ["1"]
    assert figures(html, "pending-provider") == [grid.provider.slug]
    assert figures(html, "pending-hub") == ["yangtze"]
    assert figures(html, "pending-cards") == ["64"]


def test_the_operator_page_says_when_no_pool_waits_for_approval(grid) -> None:
    html = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/").content.decode()

    assert figures(html, "pending-count") == ["0"]
    assert "No pool is waiting for approval." in html


def test_the_operator_page_lists_stale_and_suspended_pools_and_overdue_invoices(grid) -> None:
    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")

    shown = {pool["id"]: pool for pool in answer.context["attention"]}
    assert set(shown) == {str(grid.stale_pool.pk), str(grid.suspended_pool.pk)}
    assert shown[str(grid.stale_pool.pk)]["stale"] is True
    assert [row["invoice"].pk for row in answer.context["overdue"]] == [grid.overdue.pk]
    assert figures(answer.content.decode(), "invoice-amount-due") == [format_yuan(grid.overdue.amount_due)]
    assert figures(answer.content.decode(), "overdue-count") == ["1"]
    assert figures(answer.content.decode(), "overdue-total") == [format_yuan(grid.overdue.amount_due)]
    assert figures(answer.content.decode(), "attention-count") == ["2"]


def test_the_operator_page_lists_invoices_month_end_set_aside_with_their_reason(grid) -> None:
    draft = Invoice.objects.get(buyer=grid.buyer, status="draft")
    Invoice.objects.filter(pk=draft.pk).update(hold_reason="usage without a price: 60 gpu_seconds")

    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")

    assert [invoice.pk for invoice in answer.context["set_aside"]] == [draft.pk]
    assert figures(answer.content.decode(), "set-aside-reason") == ["usage without a price: 60 gpu_seconds"]
    assert figures(answer.content.decode(), "set-aside-count") == ["1"]


def test_the_operator_page_counts_the_last_days_placements_by_hub(grid, make_client) -> None:
    leases = api_get(make_client(grid.operator), "/api/v1/leases/?page_size=500")
    recent = [lease for lease in leases if lease["id"] == str(grid.lease.pk)]

    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")

    placed = {row["hub"]: row for row in answer.context["placements"]}
    assert placed["jingjinji"] == {
        "hub": "jingjinji",
        "name": "Beijing-Tianjin-Hebei",
        "leases": 1,
        "cards": recent[0]["cards"],
    }


def test_the_operator_page_shows_usage_and_the_platforms_commission_by_day(grid, make_client) -> None:
    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")
    days = answer.context["days"]
    start = datetime.fromisoformat(days[-1]["day"]).replace(tzinfo=local_zone())
    window = f"from={quote(start.isoformat())}&to={quote(answer.context['now'].isoformat())}"
    used = [
        row
        for buyer in (grid.buyer, grid.other_buyer)
        for row in api_get(make_client(buyer), f"/api/v1/usage/?granularity=day&metric=gpu_seconds&{window}")
    ]
    statements = {s["period_start"][:7]: s for s in api_get(make_client(grid.operator), "/api/v1/statements/")}
    posted = [(grid.invoice, grid.now), (grid.overdue, grid.overdue.finalized_at)]
    finalized_in_window = {f"{invoice.period_start:%Y-%m}" for invoice, at in posted if at >= start}

    assert sum(day["card_hours"] for day in days) == sum(Decimal(row["quantity"]) for row in used) / 3600 > 0
    # the platform's revenue: its commission less the VAT it owes as the seller on the invoices
    assert sum(Decimal(format_yuan(day["revenue"])) for day in days) == sum(
        Decimal(statements[month]["commission"]) - Decimal(statements[month]["tax"]) for month in finalized_in_window
    )
    assert finalized_in_window


def test_the_issuer_page_lists_programs_and_the_program_page_equals_the_report_api(grid, make_client) -> None:
    report = make_client(grid.issuer).get(f"/api/v1/voucher-programs/{grid.program.pk}/report/").json()
    client = signed_in(grid, grid.issuer)

    assert str(grid.program.pk) in client.get(f"/dashboard/{grid.issuer.slug}/").content.decode()
    html = client.get(f"/dashboard/{grid.issuer.slug}/programs/{grid.program.pk}/").content.decode()

    for key in ("budget", "granted", "redeemed", "outstanding", "expired", "revoked", "left"):
        assert figures(html, f"report-{key}") == [report[key]], key
    assert figures(html, "spend-province") == [row["redeemed"] for row in report["by_province"]] != []
    assert figures(html, "spend-hub") == [row["redeemed"] for row in report["by_hub"]]
    assert figures(html, "spend-provider") == [row["redeemed"] for row in report["by_provider"]]
    assert figures(html, "company-redeemed") == [row["redeemed"] for row in report["by_company"][:10]]
    assert report["by_province"] == [{"province": "Zhejiang", "redeemed": report["redeemed"], "redemptions": 1}]


def test_the_burn_down_ends_at_the_reports_figures(grid) -> None:
    grid.program.refresh_from_db()
    report = program_report(program=grid.program)

    last = program_burndown(program=grid.program, until=grid.now)[-1]

    assert {key: last[key] for key in ("granted", "redeemed", "outstanding", "expired", "revoked", "left")} == {
        key: report[key] for key in ("granted", "redeemed", "outstanding", "expired", "revoked", "left")
    }
    assert last["day"] == grid.now.astimezone(local_zone()).date().isoformat()


def test_the_csv_export_is_the_apis_csv(grid, make_client) -> None:
    api = make_client(grid.issuer).get(f"/api/v1/voucher-programs/{grid.program.pk}/report/?format=csv")

    page = signed_in(grid, grid.issuer).get(f"/dashboard/{grid.issuer.slug}/programs/{grid.program.pk}/report.csv")

    assert page.status_code == 200
    assert page["Content-Type"] == "text/csv; charset=utf-8"
    csv = b"".join(page.streaming_content).decode()
    assert csv == b"".join(api.streaming_content).decode()
    assert "by_province" in csv


def test_the_buyer_page_shows_spend_so_far_as_the_draft_invoice_and_vouchers_left(grid, make_client) -> None:
    api = make_client(grid.buyer)
    (draft,) = api_get(api, "/api/v1/invoices/?status=draft")
    vouchers = api_get(api, "/api/v1/vouchers/?status=active")

    html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/").content.decode()

    assert figures(html, "spend-so-far") == [draft["subtotal"]]
    assert Decimal(draft["subtotal"]) > 0
    assert figures(html, "lease-so-far") == [draft["subtotal"]]  # one lease billed this month
    assert figures(html, "vouchers-left") == [format_yuan(sum(int(Decimal(v["remaining"]) * 100) for v in vouchers))]


def test_the_forecast_keeps_a_running_lease_spending_at_its_rate_until_its_booked_end(grid) -> None:
    answer = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/")

    (row,) = answer.context["spend"]["leases"]
    # Two hours of 6 card-hours in the three hours since it started; booked for 24 hours in all.
    ends = min(grid.lease.end_at, answer.context["period_end"])
    now = answer.context["now"]
    began = grid.lease.started_at
    expected = row["so_far"] + round(row["so_far"] * (ends - now).total_seconds() / (now - began).total_seconds())
    assert abs(row["forecast"] - expected) <= 1
    assert row["forecast"] > row["so_far"]


def test_the_buyer_page_lists_invoices_with_the_apis_amounts(grid, make_client) -> None:
    invoice = make_client(grid.buyer).get(f"/api/v1/invoices/{grid.invoice.pk}/").json()

    html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/").content.decode()

    for key in ("subtotal", "voucher_credit", "bank_credit", "amount_due", "amount_paid"):
        assert figures(html, f"invoice-{key.replace('_', '-')}") == [invoice[key]], key
    assert Decimal(invoice["voucher_credit"]) > 0


def test_the_print_view_shows_the_invoice_as_the_api_does(grid, make_client) -> None:
    invoice = make_client(grid.buyer).get(f"/api/v1/invoices/{grid.invoice.pk}/").json()

    html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/").content
    html = html.decode()

    assert figures(html, "invoice-number") == [invoice["number"]]
    assert figures(html, "line-amount") == [line["amount"] for line in invoice["lines"]]
    assert figures(html, "invoice-amount-due") == [invoice["amount_due"]]


def test_the_print_view_and_the_pdf_show_what_was_refunded_only_when_something_was(grid, make_client) -> None:
    # given the invoice as paid in full and then refunded in part (a payment made twice, say)
    page = f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/"
    assert "invoice-amount-refunded" not in signed_in(grid, grid.buyer).get(page).content.decode()
    Invoice.objects.filter(pk=grid.invoice.pk).update(
        status="paid", amount_paid=F("amount_due") + 1234, amount_refunded=1234
    )
    invoice = make_client(grid.buyer).get(f"/api/v1/invoices/{grid.invoice.pk}/").json()

    # when the buyer opens its print view and its PDF
    html = signed_in(grid, grid.buyer).get(page).content.decode()
    text = pdf_text(signed_in(grid, grid.buyer).get(f"{page}pdf/").content)

    # then both show the refund beside what was paid, as the API says
    assert figures(html, "invoice-amount-refunded") == [invoice["amount_refunded"]] == ["12.34"]
    assert re.search(r"Refunded\s*¥12\.34", text), text


def local(moment: datetime) -> str:
    """As people in Shanghai read it: ``2026-12-07 14:05``."""
    return moment.astimezone(local_zone()).strftime("%Y-%m-%d %H:%M")


def test_the_print_view_shows_the_period_and_finalization_in_shanghai_time(grid) -> None:
    html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/").content

    period = f"{local(grid.invoice.period_start)} to {local(grid.invoice.period_end)} (Asia/Shanghai)"
    assert figures(html.decode(), "invoice-period") == [period]
    assert period.startswith(local(grid.invoice.period_start)[:8] + "01 00:00")  # a Shanghai month
    assert figures(html.decode(), "invoice-finalized") == [local(grid.invoice.finalized_at)]


def test_the_pdf_shows_the_period_and_finalization_in_shanghai_time(grid) -> None:
    answer = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/pdf/")

    text = pdf_text(answer.content)
    period = f"{local(grid.invoice.period_start)} to {local(grid.invoice.period_end)} (Asia/Shanghai)"
    assert period in text
    assert local(grid.invoice.finalized_at) in text.splitlines()
    assert "T00:00:00" not in text and "+00:00" not in text and not re.search(r"\dZ\b", text)


def test_the_invoice_downloads_as_a_pdf(grid) -> None:
    answer = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/pdf/")

    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/pdf"
    assert answer["Content-Disposition"] == f'attachment; filename="invoice-{grid.invoice.number}.pdf"'
    assert answer.content.startswith(b"%PDF-")
    assert answer.content.rstrip().endswith(b"%%EOF")


def test_a_draft_and_a_chinese_name_make_a_pdf_that_shows_the_name(grid) -> None:
    grid.buyer.legal_name = "杭州视觉智能科技有限公司"
    grid.buyer.save()
    draft = grid.buyer.invoices.get(status="draft")

    answer = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/invoices/{draft.pk}/pdf/")

    assert answer.status_code == 200
    assert answer.content.startswith(b"%PDF-")
    assert "杭州视觉智能科技有限公司" in pdf_text(answer.content)


def test_the_operator_opens_an_overdue_invoice_from_its_page(grid) -> None:
    client = signed_in(grid, grid.operator)

    assert client.get(f"/dashboard/{grid.operator.slug}/invoices/{grid.overdue.pk}/").status_code == 200


def test_the_provider_page_shows_pools_statements_and_heartbeats_as_the_api_does(grid, make_client) -> None:
    api = make_client(grid.provider)
    pools = {pool["id"]: pool for pool in api_get(api, "/api/v1/pools/")}
    statements = api_get(api, "/api/v1/statements/")
    usage = api_get(api, f"/api/v1/usage/?pool={grid.lease.pool_id}&metric=gpu_seconds&granularity=hour")

    answer = signed_in(grid, grid.provider).get(f"/dashboard/{grid.provider.slug}/")
    html = answer.content.decode()

    shown = {pool["id"]: pool for pool in answer.context["pools"]}
    assert set(shown) == set(pools)
    leased_pool = shown[str(grid.lease.pool_id)]
    assert leased_pool["card_hours"] == sum(Decimal(row["quantity"]) for row in usage) / 3600 == 12
    assert leased_pool["reserved_cards"] == pools[str(grid.lease.pool_id)]["reserved_cards"] == grid.lease.cards
    assert leased_pool["heartbeats"] == 2
    assert figures(html, "statement-net") == [statement["net"] for statement in statements] != []
    assert figures(html, "statement-gross") == [statement["gross"] for statement in statements]


def test_the_provider_page_shows_heartbeats_and_periods_in_shanghai_time(grid, make_client) -> None:
    statements = api_get(make_client(grid.provider), "/api/v1/statements/")
    months = [local(datetime.fromisoformat(statement["period_start"]))[:7] for statement in statements]

    answer = signed_in(grid, grid.provider).get(f"/dashboard/{grid.provider.slug}/")
    html = answer.content.decode()

    grid.lease.pool.refresh_from_db()
    shown = figures(html, "pool-last-heartbeat")
    assert local(grid.lease.pool.last_heartbeat_at) in shown
    row = re.search(
        rf'<tr data-pool="{grid.lease.pool_id}"><td>[^<]*</td><td data-figure="pool-last-heartbeat".*?</tr>', html
    )
    assert row is not None and re.search(r">(9|10)\sminutes ago</time>", row.group(0))  # its last, 10 minutes before
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d|never", text) for text in shown), shown
    assert local(grid.invoice.period_start)[:7] in months  # Shanghai months: a UTC date would be a day early
    assert figures(html, "statement-period") == months
    assert answer.context["earnings_chart"]["data"]["labels"] == list(reversed(months))
    last_hour = answer.context["heatmap"]["rows"][0]["cells"][-1]["title"]
    # The hour under way is not drawn: the heatmap ends with the last whole hour
    assert last_hour.startswith((grid.now - timedelta(hours=1)).astimezone(local_zone()).strftime("%m-%d %H:00"))


def test_the_operator_pages_placements_chart_counts_hours_in_shanghai_time(grid) -> None:
    answer = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/")

    labels = answer.context["placements_chart"]["data"]["labels"]
    assert labels[-1] == grid.now.astimezone(local_zone()).strftime("%H:00")


def test_a_member_of_several_organizations_chooses_one(grid) -> None:
    from organizations.services import member_set

    member_set(organization=grid.issuer, username=grid.users[grid.buyer.slug], password=PASSWORD)
    client = signed_in(grid, grid.buyer)

    answer = client.get("/dashboard/")

    assert answer.status_code == 200
    assert {organization.slug for organization in answer.context["organizations"]} == {
        grid.buyer.slug,
        grid.issuer.slug,
    }


def test_the_buyer_page_shows_its_compute_bank_credit_as_the_bank_api(grid, make_client) -> None:
    credit(grid.buyer, 12_345)

    html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/").content.decode()

    assert (
        figures(html, "bank-credit") == [make_client(grid.buyer).get("/api/v1/bank/").json()["balance"]] == ["623.45"]
    )


def test_pools_sharing_a_name_keep_a_row_each_on_the_providers_heatmap(grid) -> None:
    answer = signed_in(grid, grid.provider).get(f"/dashboard/{grid.provider.slug}/")

    labels = [row["label"] for row in answer.context["heatmap"]["rows"]]
    assert len(labels) == len(set(labels)) == len(answer.context["pools"]) == 5


def test_figures_are_shown_in_one_format_with_the_yuan_sign_separators_and_places() -> None:
    from dashboards import formatting

    assert formatting.money(123456789) == "¥1,234,567.89"
    assert formatting.money("-12.5") == "-¥12.50"
    assert formatting.api_money(123456789) == "1234567.89"
    assert formatting.price("9.80000001") == "¥9.8000"
    assert formatting.price(Decimal("1234.56785")) == "¥1,234.5679"
    assert formatting.quantity(Decimal("12345.5")) == "12,346"
    assert formatting.percent(Decimal("0.4567")) == "45.7%"


def test_an_overdue_invoice_shows_on_the_buyers_page_with_its_days_and_a_way_to_pay(grid) -> None:
    html = signed_in(grid, grid.other_buyer).get(f"/dashboard/{grid.other_buyer.slug}/").content.decode()

    days = (grid.now - grid.overdue.finalized_at).days - 1  # due one dunning day after it was issued
    assert 'data-state="overdue"' in html
    assert figures(html, "invoice-state") == ["overdue"]
    assert f"{days}\xa0days overdue" in html or f"{days} days overdue" in html
    assert f'action="/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/pay/"' in html
    assert f'href="/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/#pay" data-link="how-to-pay"' in html


def test_the_buyers_forecast_after_vouchers_and_credit_is_what_is_left_to_pay(grid) -> None:
    answer = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/")

    context = answer.context
    forecast = context["spend"]["forecast"]
    assert 0 < context["forecast_vouchers"] <= context["vouchers_left"]
    assert context["forecast_bank"] == min(context["bank_credit"], forecast - context["forecast_vouchers"])
    assert context["forecast_to_pay"] == forecast - context["forecast_vouchers"] - context["forecast_bank"]
    assert figures(answer.content.decode(), "forecast-to-pay") == [format_yuan(context["forecast_to_pay"])]


def test_usage_reported_before_a_lease_started_does_not_make_the_forecast_run_away(grid) -> None:
    from tests.billing.factories import usage

    # given a week of full usage backdated before the lease's start (as a backfill writes it)
    for hours_ago in range(3, 3 + 24 * 5):
        usage(grid.lease, grid.now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago), seconds=1)

    answer = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/")

    (row,) = answer.context["spend"]["leases"]
    lease, period_end = grid.lease, answer.context["period_end"]
    ahead = (min(lease.end_at, period_end) - answer.context["now"]).total_seconds() / 3600
    rate = PricePlan.objects.filter(pool=lease.pool).first().hour_prices  # type: ignore[union-attr]
    ceiling = Decimal(max(Decimal(price) for price in rate)) * lease.cards * Decimal(ahead) * 100
    assert row["forecast"] - row["so_far"] <= ceiling + 1


def test_the_print_view_is_a_finance_document(grid) -> None:
    from django.test import override_settings

    with override_settings(INVOICE_SELLER_NAME="Grid Ops Co., Ltd.", INVOICE_SELLER_CREDIT_CODE="91330100MA0000001F"):
        page = signed_in(grid, grid.other_buyer).get(f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/")
    html = page.content.decode()

    due = (grid.overdue.finalized_at + timedelta(days=1)).astimezone(local_zone()).strftime("%Y-%m-%d")
    first = grid.overdue.period_start.astimezone(local_zone())
    last = (grid.overdue.period_end - timedelta(days=1)).astimezone(local_zone())
    assert "Grid Ops Co., Ltd." in html
    assert figures(html, "seller-credit-code") == ["91330100MA0000001F"]
    assert figures(html, "buyer-credit-code") == [grid.other_buyer.credit_code]
    assert figures(html, "invoice-period-dates") == [f"{first:%Y-%m-%d} – {last:%Y-%m-%d}"]
    assert figures(html, "invoice-due-date") == [due]
    assert 'data-figure="invoice-overdue"' in html and 'id="pay"' in html
    assert f'<table class="lines" data-pool="{grid.overdue.lines.first().pool_id}">' in html  # type: ignore[union-attr]
    assert 'class="due" data-figure="invoice-amount-due"' in html


def test_the_issuer_page_shows_each_programs_redeemed_and_companies_subsidised(grid, make_client) -> None:
    report = make_client(grid.issuer).get(f"/api/v1/voucher-programs/{grid.program.pk}/report/").json()

    html = signed_in(grid, grid.issuer).get(f"/dashboard/{grid.issuer.slug}/").content.decode()

    assert figures(html, "program-redeemed") == [report["redeemed"]]
    assert figures(html, "program-companies") == ["1"]
    assert 'class="bar"' in html


def test_the_burn_down_spans_the_programs_validity_with_a_target_pace_and_no_all_zero_series(grid) -> None:
    answer = signed_in(grid, grid.issuer).get(f"/dashboard/{grid.issuer.slug}/programs/{grid.program.pk}/")

    chart = answer.context["burndown_chart"]
    labels, names = chart["data"]["labels"], [dataset["label"] for dataset in chart["data"]["datasets"]]
    assert labels[-1] == grid.program.valid_until.astimezone(local_zone()).date().isoformat()
    assert "target pace (redeemed)" in names
    assert "expired" not in names and "revoked" not in names  # zero throughout


def test_the_operators_overdue_list_pages_ten_at_a_time(grid) -> None:
    from dashboards.pages import PAGE_ROWS, paged

    rows = list(range(25))

    assert list(paged(rows, {}, "overdue").object_list) == rows[:PAGE_ROWS]
    assert list(paged(rows, {"overdue_page": "3"}, "overdue").object_list) == rows[20:]
    assert list(paged(rows, {"overdue_page": "junk"}, "overdue").object_list) == rows[:PAGE_ROWS]


def _price_index_chart(html: str) -> dict[str, Any]:
    import json

    found = re.search(r'<script id="chart-price-index" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None, "no price index chart"
    return dict(json.loads(found.group(1)))


def test_every_kind_of_page_shows_the_price_index_beside_its_own_prices(grid) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from marketplace.services import price_index_snapshot

    for days_ago in (2, 1):
        price_index_snapshot(now=timezone.now() - timedelta(days=days_ago))
    model = grid.lease.pool.gpu_model_id

    pages = {
        organization.kind: signed_in(grid, organization).get(f"/dashboard/{organization.slug}/").content.decode()
        for organization in (grid.operator, grid.issuer, grid.buyer, grid.provider)
    }

    labels = {
        kind: [line["label"] for line in _price_index_chart(html)["data"]["datasets"]] for kind, html in pages.items()
    }
    assert f"{model} national median" in labels["operator"] and f"{model} national median" in labels["issuer"]
    assert labels["buyer"] == [f"{model} national median", f"{model} your locked price"]
    assert labels["provider"] == [f"{model} national median", f"{model} your price now"]


def test_reservations_deposits_and_their_use_show_on_the_buyer_provider_and_operator_pages(grid) -> None:
    from django.utils import timezone

    from marketplace.deposits import deposit_create
    from marketplace.dispatch import Requirements
    from marketplace.services import order_place
    from tests.billing.factories import usage

    now = timezone.now()
    pool = pool_factory(provider=grid.provider, cards=8, hub_id="jingjinji", province="Beijing", name="reserved")
    reserved = order_place(
        buyer=grid.buyer,
        requirements=Requirements(cards=8, duration_hours=10, workload="training", pool=pool.pk, commitment="reserved"),
    ).leases.get()
    hour = now.replace(minute=0, second=0, microsecond=0)
    deposit = deposit_create(lease=reserved, depositor=grid.buyer, cards=4, start_at=hour, by="test")
    resale = order_place(
        buyer=grid.other_buyer,
        requirements=Requirements(cards=4, duration_hours=1, workload="training", pool=pool.pk),
    ).leases.get()
    usage(reserved, hour, seconds=4 * 1800)  # the holder uses half an hour of 4 cards
    usage(resale, hour, seconds=4 * 3600)  # the reseller a whole hour of the 4 deposited

    buyer_html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/").content.decode()
    provider_html = signed_in(grid, grid.provider).get(f"/dashboard/{grid.provider.slug}/").content.decode()
    operator_html = signed_in(grid, grid.operator).get(f"/dashboard/{grid.operator.slug}/").content.decode()

    assert resale.deposit_id == deposit.pk
    booked = Decimal(8 * 10)
    assert [Decimal(v) for v in figures(buyer_html, "reserved-booked")] == [booked]
    assert [Decimal(v) for v in figures(buyer_html, "reserved-used")] == [Decimal(2)]
    assert [Decimal(v) for v in figures(buyer_html, "reserved-resold")] == [Decimal(4)]
    assert f'data-deposit="{deposit.pk}"' in buyer_html
    assert [Decimal(v) for v in figures(provider_html, "pool-reserved-resold")] == [Decimal(4)]
    assert [Decimal(v) for v in figures(provider_html, "pool-reserved-booked")] == [booked]
    assert [Decimal(v) for v in figures(operator_html, "reserved-utilization")] == [Decimal(6) / booked]
