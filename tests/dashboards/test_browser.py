"""The dashboards in a real browser: Debian's chromium, headless, driven by Playwright.

The app is served by pytest-django's live server on PostgreSQL; a member of each
kind of organization signs in through the login form, opens their pages, and the
numbers shown (read from ``data-figure`` elements) are checked against what the
API answers over HTTP for the same question. Screenshots go to
``var/screenshots/dashboards/``. No browser is downloaded: without
``/usr/bin/chromium`` (``apt-get install -y chromium``) this test fails.
"""

import json
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from organizations.services import api_key_create
from tests.conftest import REPO
from tests.dashboards.scenario import PASSWORD, Grid, build_grid

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = REPO / "var" / "screenshots" / "dashboards"


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
    return str(element.get_attribute("data-value") or element.inner_text()).strip()


def figures(page: Any, name: str) -> list[str]:
    return [text.strip() for text in page.locator(f'[data-figure="{name}"]').all_inner_texts()]


def sign_in(browser: Any, base: str, username: str) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(f"{base}/dashboard/login/")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    with page.expect_navigation():
        page.click('button[type="submit"]')
    return page


def charts_drawn(page: Any) -> int:
    return int(page.locator('canvas[data-drawn="true"]').count())


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
                offers = apis["buyer"].get(f"/api/v1/offers/?hub={hub['code']}&ordering=price")
                price = figure(page, "hub-price-now", card)
                assert (Decimal(price) if offers else price) == (
                    Decimal(offers[0]["price_per_card_hour"]) if offers else "no offers"
                )
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
            assert charts_drawn(page) == 3
            page.screenshot(path=str(SCREENSHOTS / "operator.png"), full_page=True)

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
            page.screenshot(path=str(SCREENSHOTS / "issuer-program.png"), full_page=True)

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
            page.screenshot(path=str(SCREENSHOTS / "buyer.png"), full_page=True)
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
            assert charts_drawn(page) == 3
            page.screenshot(path=str(SCREENSHOTS / "provider.png"), full_page=True)
            assert page.goto(f"{base}/dashboard/{slugs['buyer']}/").status == 404
        finally:
            browser.close()

    for name in ("operator", "issuer-program", "buyer", "buyer-invoice-print", "provider"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000, name
