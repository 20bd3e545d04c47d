"""The dashboards, the invoice's print view and PDF and the issuer's report in Simplified Chinese and
English: the member's own choice, else their organization's default (Chinese in a mainland
province), else Accept-Language. On a Chinese page no English message of the catalog is left
(tests/catalog.py: the catalog's entries, not a guessed list); days read ``2026年3月18日``."""

import csv
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from organizations.languages import MAINLAND_PROVINCES, member_language
from organizations.models import MemberProfile, Organization
from organizations.services import member_language_set, member_set
from pools.models import GpuModel, Hub, ResourcePool
from tests.catalog import page_text, untranslated_on
from tests.conftest import TEST_NOW
from tests.dashboards.scenario import PASSWORD, Grid, build_grid
from tests.factories import BuyerFactory
from tests.pdf_text import pdf_text
from vouchers.models import VoucherProgram
from vouchers.report_csv import HEADINGS

pytestmark = pytest.mark.django_db
CHINESE = re.compile(r"[\u4e00-\u9fff]")
CSV_ONLY = ("report column",)  # the reports' headings; on a page, "hub" or "pool" is a name's part


@pytest.fixture
def grid() -> Grid:
    return build_grid()


def member(grid: Grid, organization: Organization, language: str) -> Client:
    client = Client()
    assert client.login(username=grid.users[organization.slug], password=PASSWORD)
    user = get_user_model().objects.get(username=grid.users[organization.slug])
    member_language_set(user_id=user.pk, language=language)
    return client


def data_names() -> list[str]:
    """What the test itself named (organizations, people, pools, hubs, models, programs): it is not
    the catalog's to translate."""
    names: list[str] = []
    for organization in Organization.objects.all():
        names += [organization.legal_name, organization.slug, organization.province, organization.city]
    names += list(get_user_model().objects.values_list("username", flat=True))
    names += list(ResourcePool.objects.values_list("name", flat=True))
    names += list(Hub.objects.values_list("name", flat=True)) + [
        str(pk) for pk in Hub.objects.values_list("pk", flat=True)
    ]
    names += list(GpuModel.objects.values_list("name", flat=True)) + [
        str(pk) for pk in GpuModel.objects.values_list("pk", flat=True)
    ]
    names += list(VoucherProgram.objects.values_list("name", flat=True))
    return [name for name in names if name]


def pages(grid: Grid) -> dict[str, tuple[Organization, str]]:
    return {
        "buyer": (grid.buyer, f"/dashboard/{grid.buyer.slug}/"),
        "invoice": (grid.buyer, f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/"),
        "draft invoice": (
            grid.buyer,
            f"/dashboard/{grid.buyer.slug}/invoices/{grid.buyer.invoices.get(status='draft').pk}/",
        ),
        "provider": (grid.provider, f"/dashboard/{grid.provider.slug}/"),
        "issuer": (grid.issuer, f"/dashboard/{grid.issuer.slug}/"),
        "program": (grid.issuer, f"/dashboard/{grid.issuer.slug}/programs/{grid.program.pk}/"),
        "operator": (grid.operator, f"/dashboard/{grid.operator.slug}/"),
        "overdue invoice": (grid.operator, f"/dashboard/{grid.operator.slug}/invoices/{grid.overdue.pk}/"),
    }


PAGES = ["buyer", "invoice", "draft invoice", "provider", "issuer", "program", "operator", "overdue invoice"]


@pytest.mark.parametrize("name", PAGES)
def test_a_page_in_chinese_leaves_no_english_message_of_the_catalog(grid, name) -> None:
    organization, path = pages(grid)[name]

    answer = member(grid, organization, "zh-hans").get(path)

    assert answer.status_code == 200
    assert answer["Content-Language"] == "zh-hans"
    html = answer.content.decode()
    assert '<html lang="zh-Hans">' in html
    assert untranslated_on(page_text(html), data=data_names(), skip_contexts=CSV_ONLY) == []


@pytest.mark.parametrize("name", PAGES)
def test_the_same_page_in_english_shows_no_chinese_but_the_language_choice(grid, name) -> None:
    organization, path = pages(grid)[name]

    answer = member(grid, organization, "en").get(path)

    assert answer.status_code == 200 and answer["Content-Language"] == "en"
    shown = [segment for segment in page_text(answer.content.decode()) if CHINESE.search(segment)]
    assert shown == ["简体中文"]


def test_the_buyers_page_in_chinese_shows_days_money_and_statuses_as_chinese_readers_write_them(grid) -> None:
    html = member(grid, grid.buyer, "zh-hans").get(f"/dashboard/{grid.buyer.slug}/").content.decode()

    today = f"{TEST_NOW.year}年{TEST_NOW.month}月{TEST_NOW.day}日"
    assert f"数据截至 {today}" in html
    assert re.search(r"本月：\d{4}年\d{1,2}月1日 至 \d{4}年\d{1,2}月\d{1,2}日", html)
    assert "支出、额度与发票" in html and "算力券" in html and "已开具" in html
    assert re.search(r">¥\d{1,3}(,\d{3})*\.\d{2}<", html)  # ¥15,000.00, as in English
    assert not re.search(r">\d{4}-\d{2}-\d{2}", html)  # no ISO day shown


def test_the_invoice_print_view_in_chinese_reads_as_a_chinese_invoice(grid) -> None:
    path = f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/"
    html = member(grid, grid.buyer, "zh-hans").get(path).content.decode()

    for label in ("发票", "销售方", "购买方", "统一社会信用代码", "账期", "应付金额", "算力券抵扣", "付款方式"):
        assert label in html, label
    assert re.search(r'data-figure="invoice-due-date">\d{4}年\d{1,2}月\d{1,2}日<', html)
    assert f'data-figure="invoice-amount-due" data-value="{grid.invoice.amount_due / 100:.2f}"' in html


def test_a_member_reads_their_organizations_default_until_they_choose(grid, settings) -> None:
    settings.DEFAULT_LANGUAGE_IN_MAINLAND = "zh-hans"
    abroad = BuyerFactory(province="Hong Kong")
    member_set(organization=abroad, username="hk-member", password=PASSWORD)
    client, hk = Client(), Client()
    assert client.login(username=grid.users[grid.buyer.slug], password=PASSWORD)  # Zhejiang
    assert hk.login(username="hk-member", password=PASSWORD)

    in_zhejiang = client.get(f"/dashboard/{grid.buyer.slug}/", HTTP_ACCEPT_LANGUAGE="en")
    in_hong_kong = hk.get(f"/dashboard/{abroad.slug}/", HTTP_ACCEPT_LANGUAGE="zh-CN")
    chosen = client.post(
        "/dashboard/language/", {"language": "en", "next": f"/dashboard/{grid.buyer.slug}/"}, HTTP_ACCEPT_LANGUAGE="en"
    )
    afterwards = client.get(f"/dashboard/{grid.buyer.slug}/")

    assert "Zhejiang" in MAINLAND_PROVINCES and "Hong Kong" not in MAINLAND_PROVINCES
    assert in_zhejiang["Content-Language"] == "zh-hans" and "支出、额度与发票" in in_zhejiang.content.decode()
    assert in_hong_kong["Content-Language"] == "en" and "Spend, credit and invoices" in in_hong_kong.content.decode()
    assert (chosen.status_code, chosen["Location"]) == (302, f"/dashboard/{grid.buyer.slug}/")
    assert afterwards["Content-Language"] == "en" and "Spend, credit and invoices" in afterwards.content.decode()


def test_choosing_a_language_takes_only_the_two_offered_and_a_local_next_page(grid) -> None:
    client = Client()
    assert client.login(username=grid.users[grid.buyer.slug], password=PASSWORD)
    user_id = get_user_model().objects.get(username=grid.users[grid.buyer.slug]).pk

    refused = client.post("/dashboard/language/", {"language": "fr"})
    elsewhere = client.post("/dashboard/language/", {"language": "zh-hans", "next": "https://evil.example/"})
    back_to_default = client.post("/dashboard/language/", {"language": ""})

    assert refused.status_code == 400
    assert (elsewhere.status_code, elsewhere["Location"]) == (302, "/dashboard/")
    assert back_to_default.status_code == 302
    assert MemberProfile.objects.get(user_id=user_id).language == ""
    assert member_language(user_id) == "en"  # the suite's default for mainland organizations (test settings)
    assert Client().post("/dashboard/language/", {"language": "en"}).status_code == 302  # to sign in: no change
    assert MemberProfile.objects.filter(language="en").count() == 0


def test_the_sign_in_page_follows_accept_language(grid) -> None:
    chinese = Client().get("/dashboard/login/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.8")
    english = Client().get("/dashboard/login/", HTTP_ACCEPT_LANGUAGE="de-DE")

    assert chinese["Content-Language"] == "zh-hans" and "登录" in chinese.content.decode()
    assert untranslated_on(page_text(chinese.content.decode()), skip_contexts=CSV_ONLY) == []
    assert english["Content-Language"] == "en" and "Sign in" in english.content.decode()
    assert "Accept-Language" in chinese["Vary"]


def test_the_api_follows_accept_language_and_never_reads_a_members_session(grid) -> None:
    client = member(grid, grid.buyer, "zh-hans")  # signed in, Chinese chosen: the cookie goes along

    english = client.get("/api/v1/invoices/")
    chinese = client.get("/api/v1/invoices/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")

    assert english.status_code == chinese.status_code == 401
    assert english["Content-Language"] == "en" and chinese["Content-Language"] == "zh-hans"
    assert "Accept-Language" in english["Vary"] and "Cookie" not in english["Vary"]


def test_the_invoice_pdf_in_chinese_embeds_the_cjk_font_and_leaves_no_english_message(grid) -> None:
    grid.buyer.legal_name = "杭州视觉智能科技有限公司"
    grid.buyer.save()
    path = f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/pdf/"

    chinese = pdf_text(member(grid, grid.buyer, "zh-hans").get(path).content)
    english = pdf_text(member(grid, grid.buyer, "en").get(path).content)

    for label in (
        "发票",
        "销售方",
        "购买方",
        "统一社会信用代码",
        "账期",
        "应付金额",
        "付款方式",
        "杭州视觉智能科技有限公司",
    ):
        assert label in chinese, label
    assert re.search(r"\d{4}年\d{1,2}月1日 00:00 至 \d{4}年\d{1,2}月1日 00:00（Asia/Shanghai）", chinese)
    assert untranslated_on(chinese.splitlines(), data=data_names(), skip_contexts=CSV_ONLY) == []
    assert "Amount due" in english and "杭州视觉智能科技有限公司" in english  # a Chinese name in English, not "?"
    assert "Seller" in english and "发票" not in english


def test_the_issuers_report_csv_has_chinese_headings_in_chinese_and_the_column_names_in_english(grid) -> None:
    path = f"/dashboard/{grid.issuer.slug}/programs/{grid.program.pk}/report.csv"

    chinese = b"".join(member(grid, grid.issuer, "zh-hans").get(path).streaming_content).decode()  # type: ignore[attr-defined]
    english = b"".join(member(grid, grid.issuer, "en").get(path).streaming_content).decode()  # type: ignore[attr-defined]

    rows = list(csv.reader(io.StringIO(chinese)))
    assert rows[0][0] == "项目" and ["合计"] in rows and ["核销笔数"] in rows
    assert "企业统一社会信用代码" in rows[rows.index(["核销笔数"]) + 1]
    english_rows = list(csv.reader(io.StringIO(english)))
    assert (
        english_rows[0][0] == "program"
        and "company_credit_code" in english_rows[english_rows.index(["redemptions"]) + 1]
    )
    assert len(rows) == len(english_rows)  # the same report, only its headings translated
    untranslated = [
        english_cell
        for chinese_row, english_row in zip(rows, english_rows, strict=True)
        for chinese_cell, english_cell in zip(chinese_row, english_row, strict=True)
        if english_cell in HEADINGS and chinese_cell == english_cell
    ]
    assert untranslated == []


@pytest.mark.parametrize("name", ["buyer", "invoice", "operator"])
def test_a_page_names_each_hub_in_the_readers_language(grid, name) -> None:
    # given a page that names the hub of the scenario's pools (jingjinji: 京津冀枢纽)
    organization, path = pages(grid)[name]
    hub = Hub.objects.get(pk="jingjinji")
    assert hub.name_zh and hub.name != hub.name_zh

    # when a reader of Chinese and a reader of English open it
    chinese = "\n".join(page_text(member(grid, organization, "zh-hans").get(path).content.decode()))
    english = "\n".join(page_text(member(grid, organization, "en").get(path).content.decode()))

    # then each reads the hub's name in their language, and only that one
    assert hub.name_zh in chinese and hub.name not in chinese
    assert hub.name in english and hub.name_zh not in english
