"""The issuer's claim documents in Simplified Chinese: the PDF (CJK font embedded) and the CSV's
headings, with no English message of the catalog left; in English, the CSV keeps its column names."""

import csv
import io
from typing import Any

import pytest

from organizations.models import Organization
from organizations.services import member_language_set, member_set
from tests.catalog import untranslated_on
from tests.pdf_text import pdf_text
from tests.settlements.test_claims import _claim
from vouchers.report_csv import HEADINGS

pytestmark = pytest.mark.django_db


def _names() -> list[str]:
    names: list[str] = []
    for organization in Organization.objects.all():
        names += [organization.legal_name, organization.slug, organization.province, organization.city]
    return [name for name in names if name]


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_claims_pdf_and_csv_come_in_the_members_language(
    paid_march: Any, issuer: Any, client: Any, language: str
) -> None:
    claim = _claim(paid_march)
    member = member_set(organization=issuer, username="issuer-member", password="unused").user
    member_language_set(user_id=member.pk, language=language)
    client.force_login(member)

    pdf = client.get(f"/dashboard/{issuer.slug}/claims/{claim.pk}/pdf/")
    rows = list(
        csv.reader(io.StringIO(client.get(f"/dashboard/{issuer.slug}/claims/{claim.pk}/claim.csv").content.decode()))
    )

    text = pdf_text(pdf.content)
    assert pdf["Content-Language"] == language
    assert paid_march.number in text
    if language == "zh-hans":
        assert f"补贴申领 {claim.number}" in text and "发放方" in text and "已申领" in text
        assert untranslated_on(text.splitlines(), data=[*_names(), claim.program.name]) == []
        assert rows[0] == ["申领", "项目", "发放方", "期间开始", "期间结束", "状态"]
        assert "企业统一社会信用代码" in rows[5] and "发票号" in rows[5]
    else:
        assert f"Subsidy claim {claim.number}" in text and "Issuer" in text
        assert rows[0] == ["claim", "program", "issuer", "period_start", "period_end", "status"]
        assert set(rows[5]) <= set(HEADINGS)
