"""The dashboards in a real browser: Debian's chromium, headless, driven by Playwright.

The app is served by pytest-django's live server on PostgreSQL; a member of each
kind of organization signs in through the login form, opens their pages, and the
numbers shown (read from ``data-figure`` elements: their ``data-value``, the API's
exact figure beside the formatted one) are checked against what the API answers over
HTTP for the same question. Each page is also opened on a desk (1440 x 900) and a
phone (390 x 844): it must not scroll sideways, and every chart must have a text
alternative. Screenshots of each page at both sizes are kept in
``var/screenshots/dashboards/`` (``<page>-<width>.png``). No browser is downloaded:
without ``/usr/bin/chromium`` (``apt-get install -y chromium``) this test fails.
"""

import io
import json
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from billing.selectors import invoices_overdue
from dashboards.pages import PAGE_ROWS
from organizations.services import api_key_create
from tests.conftest import REPO
from tests.dashboards.scenario import PASSWORD, Grid, build_grid

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = REPO / "var" / "screenshots" / "dashboards"
VIEWPORTS = [(1440, 900), (390, 844)]  # a desk, a phone
SCREENS = 3  # the operator's page on the national data set: under this many screens tall on a desk
LAYOUT = """() => ({
    scrollWidth: document.documentElement.scrollWidth,
    width: window.innerWidth,
    height: document.documentElement.scrollHeight,
    charts: document.querySelectorAll("canvas, .heatmap").length,
    unlabelled: [...document.querySelectorAll("canvas, .heatmap")]
        .filter((chart) => chart.getAttribute("role") !== "img" || !(chart.getAttribute("aria-label") || "").trim())
        .map((chart) => chart.dataset.chart || chart.className),
})"""


class Api:
    """The API over HTTP, as a client of the live server sees it."""

    def __init__(self, base: str, organization: Any) -> None:
        self.base = base
        _, self.key = api_key_create(organization=organization, name="browser test")

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            data = json.loads(response.read())
        if isinstance(data, dict) and "results" in data:
            results = data["results"]
            while data.get("next"):
                with urllib.request.urlopen(urllib.request.Request(data["next"], headers=request.headers)) as more:
                    data = json.loads(more.read())
                results += data["results"]
            return results
        return data


def figure(page: Any, name: str, within: str = "") -> str:
    element = page.locator(f'{within} [data-figure="{name}"]'.strip())
    assert element.count() == 1, f"{within} {name}: {element.count()} elements"
    value = element.get_attribute("data-value")  # the API's exact figure, beside the one formatted for people
    return str(element.inner_text() if value is None else value).strip()


def figures(page: Any, name: str) -> list[str]:
    pairs = page.locator(f'[data-figure="{name}"]').evaluate_all(
        "(elements) => elements.map((element) => [element.getAttribute('data-value'), element.innerText])"
    )
    return [str(text if value is None else value).strip() for value, text in pairs]


def sign_in(browser: Any, base: str, username: str, width: int = 1440, height: int = 900) -> Any:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{base}/dashboard/login/")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    with page.expect_navigation():
        page.click('button[type="submit"]')
    return page


def charts_drawn(page: Any) -> int:
    return int(page.locator('canvas[data-drawn="true"]').count())


def looks_right_on_a_desk_and_a_phone(browser: Any, base: str, username: str, path: str, name: str) -> list[dict]:
    """Open ``path`` at each of ``VIEWPORTS``: no sideways scroll, a text alternative for every chart;
    a screenshot of each kept as ``<name>-<width>.png``. The layout measured at each size."""
    measured = []
    for width, height in VIEWPORTS:
        page = sign_in(browser, base, username, width, height)
        assert page.goto(base + path).status == 200, path
        layout = page.evaluate(LAYOUT)
        assert layout["scrollWidth"] <= layout["width"], f"{name} scrolls sideways at {width} px: {layout}"
        assert not layout["unlabelled"], f"{name}: charts without a text alternative: {layout['unlabelled']}"
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        measured.append(layout)
        page.context.close()
    return measured


@pytest.fixture
def grid(transactional_db: None) -> Grid:
    return build_grid()


@pytest.mark.wall_clock  # the browser keeps the session cookie by its own clock
def test_each_kind_of_member_sees_the_apis_numbers_and_only_their_own_pages(grid, live_server) -> None:
    assert CHROMIUM.exists(), "The browser test needs Debian's chromium: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    base = live_server.url
    apis = {kind: Api(base, getattr(grid, kind)) for kind in ("operator", "issuer", "buyer", "provider")}
    buyers_api = Api(base, grid.other_buyer)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Everything the database gives the test comes before the browser starts: Playwright's sync
    # API runs an event loop in this thread, where Django refuses ORM calls.
    users = dict(grid.users)
    slugs = {kind: getattr(grid, kind).slug for kind in ("operator", "issuer", "buyer", "provider", "other_buyer")}
    program_id, invoice_id, lease_pool = str(grid.program.pk), str(grid.invoice.pk), str(grid.lease.pool_id)
    overdue_id, day_ago = str(grid.overdue.pk), (grid.now - timedelta(days=1)).isoformat().replace("+00:00", "Z")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # --- operator: the national grid
            page = sign_in(browser, base, users[slugs["operator"]])
            assert page.url == f"{base}/dashboard/{slugs['operator']}/"
            for hub in apis["operator"].get("/api/v1/hubs/"):
                pools = apis["operator"].get(f"/api/v1/pools/?status=active&hub={hub['code']}&page_size=500")
                card = f'[data-hub="{hub["code"]}"].card'
                cards, reserved = sum(p["cards"] for p in pools), sum(p["reserved_cards"] for p in pools)
                assert int(figure(page, "hub-cards", card)) == cards
                assert int(figure(page, "hub-reserved", card)) == reserved
                shown = Decimal(figure(page, "hub-utilization", card))
                assert shown == ((Decimal(reserved) / cards).quantize(Decimal("0.0001")) if cards else 0)
            for row in page.locator("tr[data-gpu]").all():
                gpu = row.get_attribute("data-gpu")
                for hub in apis["operator"].get("/api/v1/hubs/"):
                    offers = apis["buyer"].get(f"/api/v1/offers/?hub={hub['code']}&gpu_model={gpu}&ordering=price")
                    price = figure(page, f"price-{hub['code']}", f'tr[data-gpu="{gpu}"]')
                    assert price == (offers[0]["price_per_card_hour"] if offers else ""), (gpu, hub["code"])
            every_pool = apis["operator"].get("/api/v1/pools/?page_size=500")
            attention = [
                p for p in every_pool if p["status"] == "suspended" or (p["status"] == "active" and p["stale"])
            ]
            assert int(figure(page, "attention-count")) == len(attention) == 2
            overdue = apis["operator"].get(f"/api/v1/invoices/{overdue_id}/")
            assert figures(page, "invoice-amount-due") == [overdue["amount_due"]]
            leases = apis["operator"].get("/api/v1/leases/?page_size=500")
            assert int(figure(page, "placed-leases", '[data-hub="jingjinji"]')) == len(
                [lease for lease in leases if lease["created_at"] >= day_ago]
            )
            # the activity's three and electricity per token (no price index yet: no snapshot taken)
            assert charts_drawn(page) == page.locator("canvas[data-chart]").count() == 4

            # --- issuer: a program's burn-down and spend
            page = sign_in(browser, base, users[slugs["issuer"]])
            with page.expect_navigation():
                page.click(f'[data-program="{program_id}"] a')
            report = apis["issuer"].get(f"/api/v1/voucher-programs/{program_id}/report/")
            for key in ("budget", "granted", "redeemed", "outstanding", "expired", "revoked", "left"):
                assert figure(page, f"report-{key}") == report[key], key
            assert figures(page, "spend-province") == [row["redeemed"] for row in report["by_province"]]
            assert figures(page, "spend-hub") == [row["redeemed"] for row in report["by_hub"]]
            assert figures(page, "spend-provider") == [row["redeemed"] for row in report["by_provider"]]
            assert figures(page, "company-redeemed") == [row["redeemed"] for row in report["by_company"][:10]]
            with page.expect_download() as download:
                page.click('[data-link="csv"]')
            assert Path(download.value.path()).read_text().startswith("program,")
            assert charts_drawn(page) == 4

            # --- buyer: spend, credit, invoices
            page = sign_in(browser, base, users[slugs["buyer"]])
            (draft,) = apis["buyer"].get("/api/v1/invoices/?status=draft")
            vouchers = apis["buyer"].get("/api/v1/vouchers/?status=active")
            assert figure(page, "spend-so-far") == draft["subtotal"]
            assert Decimal(figure(page, "vouchers-left")) == sum(Decimal(v["remaining"]) for v in vouchers) > 0
            assert figure(page, "bank-credit") == apis["buyer"].get("/api/v1/bank/")["balance"] == "500.00"
            invoice = apis["buyer"].get(f"/api/v1/invoices/{invoice_id}/")
            row = f'[data-invoice="{invoice_id}"]'
            for key in ("subtotal", "voucher_credit", "bank_credit", "amount_due", "amount_paid"):
                assert figure(page, f"invoice-{key.replace('_', '-')}", row) == invoice[key], key
            assert charts_drawn(page) == 1
            pdf = page.request.get(base + page.get_attribute(f'{row} [data-link="pdf"]', "href"))
            assert pdf.headers["content-type"] == "application/pdf"
            assert pdf.body().startswith(b"%PDF-")
            with page.expect_navigation():
                page.click(f'{row} [data-link="print"]')
            assert figure(page, "invoice-amount-due") == invoice["amount_due"]
            assert figures(page, "line-amount") == [line["amount"] for line in invoice["lines"]]
            page.emulate_media(media="print")
            page.screenshot(path=str(SCREENSHOTS / "buyer-invoice-print.png"), full_page=True)

            # ... and may not open anyone else's pages, nor another buyer's invoice under its own.
            for kind in ("operator", "issuer", "provider", "other_buyer"):
                assert page.goto(f"{base}/dashboard/{slugs[kind]}/").status == 404, kind
            other_invoice = buyers_api.get("/api/v1/invoices/?status=finalized")[0]["id"]
            assert page.goto(f"{base}/dashboard/{slugs['buyer']}/invoices/{other_invoice}/").status == 404

            # --- provider: pools, earnings, heartbeats
            page = sign_in(browser, base, users[slugs["provider"]])
            for pool in apis["provider"].get("/api/v1/pools/"):
                row = f'tr[data-pool="{pool["id"]}"]:has([data-figure="pool-cards"])'
                assert int(figure(page, "pool-cards", row)) == pool["cards"]
                assert int(figure(page, "pool-reserved", row)) == pool["reserved_cards"]
                assert int(figure(page, "pool-healthy", row)) == pool["healthy_cards"]
            window = quote(page.locator("[data-window-start]").get_attribute("data-window-start") or "")
            used = apis["provider"].get(
                f"/api/v1/usage/?pool={lease_pool}&metric=gpu_seconds&granularity=hour&from={window}"
            )
            row = f'tr[data-pool="{lease_pool}"]:has([data-figure="pool-cards"])'
            assert Decimal(figure(page, "pool-card-hours", row)) == sum(Decimal(r["quantity"]) for r in used) / 3600
            statements = apis["provider"].get("/api/v1/statements/")
            assert figures(page, "statement-net") == [statement["net"] for statement in statements] != []
            assert charts_drawn(page) == 1
            assert page.locator('.heatmap[role="img"] .hm-row:not(.hm-days)').count() == len(
                apis["provider"].get("/api/v1/pools/")
            )
            assert page.goto(f"{base}/dashboard/{slugs['buyer']}/").status == 404

            # --- every page on a desk and on a phone
            pages = [
                ("operator", "operator", ""),
                ("issuer", "issuer", ""),
                ("issuer-program", "issuer", f"programs/{program_id}/"),
                ("buyer", "buyer", ""),
                ("buyer-invoice", "buyer", f"invoices/{invoice_id}/"),
                ("provider", "provider", ""),
            ]
            for name, kind, path in pages:
                looks_right_on_a_desk_and_a_phone(
                    browser, base, users[slugs[kind]], f"/dashboard/{slugs[kind]}/{path}", name
                )
        finally:
            browser.close()

    print(f"screenshots: {SCREENSHOTS}")  # noqa: T201
    for name, *_ in pages:
        for width, _height in VIEWPORTS:
            assert (SCREENSHOTS / f"{name}-{width}.png").stat().st_size > 10_000, name


@pytest.fixture
def national(transactional_db: None) -> dict[str, Any]:
    """The national data set (5%) with a working month on it, as ``make demo`` and the benchmark build it."""
    from django.core.management import call_command
    from django.utils import timezone

    from billing.activity import national_month
    from organizations.services import member_set

    call_command("seed_national", scale=0.05, seed=42, stdout=io.StringIO())
    month = national_month(
        now=timezone.now(), orders=80, usage_days=2, last_month_leases=80, voucher_buyers=100, say=lambda line: None
    )
    member_set(organization=month["operator"], username="national-operator", password=PASSWORD)
    return {
        "slug": month["operator"].slug,
        "overdue": invoices_overdue(organization=month["operator"], now=timezone.now()).count(),
    }


@pytest.mark.wall_clock  # the browser keeps the session cookie by its own clock
def test_the_operators_page_of_the_national_grid_is_under_three_screens_and_pages_its_overdue_invoices(
    national, live_server
) -> None:
    assert CHROMIUM.exists(), "The browser test needs Debian's chromium: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = f"/dashboard/{national['slug']}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            desk, _phone = looks_right_on_a_desk_and_a_phone(
                browser, live_server.url, "national-operator", path, "operator-national"
            )
            assert desk["height"] < SCREENS * VIEWPORTS[0][1], f"{desk['height']} px tall on a desk"
            page = sign_in(browser, live_server.url, "national-operator")
            page.goto(live_server.url + path)
            shown = page.locator("#overdue tr[data-invoice]").count()
            assert int(figure(page, "overdue-count")) == national["overdue"]
            assert shown == min(national["overdue"], PAGE_ROWS)
            if national["overdue"] > PAGE_ROWS:
                with page.expect_navigation():
                    page.click('[data-pager="overdue"] a[rel="next"]')
                assert page.locator("#overdue tr[data-invoice]").count() == min(
                    national["overdue"] - PAGE_ROWS, PAGE_ROWS
                )
        finally:
            browser.close()
    print(f"desk: {desk['height']} px tall; {national['overdue']} invoices overdue; screenshots: {SCREENSHOTS}")  # noqa: T201


@pytest.mark.wall_clock  # the browser keeps the session cookie by its own clock
def test_the_buyer_chooses_chinese_and_reads_the_same_figures_on_a_desk_and_a_phone(grid, live_server) -> None:
    """The buyer's page in Simplified Chinese, chosen with the header's language form: the same
    figures (their ``data-value``; the forecast moves with the clock), Chinese headings and days,
    drawn with a CJK font (Debian's fonts-wqy-zenhei, which chromium finds too); screenshots
    ``buyer-zh-<width>.png``."""
    assert CHROMIUM.exists(), "The browser test needs Debian's chromium: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base, username, path = live_server.url, grid.users[grid.buyer.slug], f"/dashboard/{grid.buyer.slug}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = sign_in(browser, base, username)
            assert page.goto(base + path).status == 200
            english = {name: figure(page, name) for name in ("spend-so-far", "bank-credit", "vouchers-left")}
            assert page.locator("h1").inner_text() == "Spend, credit and invoices"
            page.select_option('select[name="language"]', "zh-hans")
            with page.expect_navigation():
                page.click('[data-action="language"]')
            assert page.url == base + path
            page.context.close()

            for width, height in VIEWPORTS:
                page = sign_in(browser, base, username, width, height)
                assert page.goto(base + path).status == 200
                assert page.locator("html").get_attribute("lang") == "zh-Hans"
                assert page.locator("h1").inner_text() == "支出、额度与发票"
                assert "发票" in page.locator("main").inner_text()
                assert {name: figure(page, name) for name in english} == english
                assert "年" in page.locator("footer").inner_text()
                layout = page.evaluate(LAYOUT)
                assert layout["scrollWidth"] <= layout["width"], f"buyer-zh scrolls sideways at {width} px"
                assert charts_drawn(page) == layout["charts"]
                page.screenshot(path=str(SCREENSHOTS / f"buyer-zh-{width}.png"), full_page=True)
                page.context.close()
        finally:
            browser.close()
    for width, _height in VIEWPORTS:
        assert (SCREENSHOTS / f"buyer-zh-{width}.png").stat().st_size > 10_000
