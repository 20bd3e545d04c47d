"""The issuer's documents carry each company's taxpayer id and the fapiao numbers of the invoices its
vouchers paid: the claim (API, CSV, PDF) and the program report's CSV."""

import csv
import io
from typing import Any

import pytest
from django.test import Client

from billing.models import Invoice
from billing.services.fapiao import Upload, fapiao_issue, fapiao_request
from organizations.services import invoicing_details_set, member_set
from settlements.models import SubsidyClaim
from settlements.services.claims import claims_build
from tests.billing.test_fapiao import TAXPAYER_ID
from tests.dashboards.test_pages import pdf_text
from tests.settlements.conftest import MAY_20

pytestmark = pytest.mark.django_db
APRIL = MAY_20.replace(month=4, day=15)
NUMBER = "26112000000000000077"


@pytest.fixture
def fapiao_of_march(paid_march: Invoice) -> Any:
    invoicing_details_set(
        organization=paid_march.buyer, title=paid_march.buyer.legal_name, taxpayer_id=TAXPAYER_ID, by="t"
    )
    request, _ = fapiao_request(invoice=paid_march, kind="ordinary", by="t")
    return fapiao_issue(
        request_id=request.pk,
        number=NUMBER,
        code="",
        issued_on=paid_march.finalized_at.date(),  # type: ignore[union-attr]
        upload=Upload(name="f.pdf", content=b"%PDF-1.7 x"),
        by="operator",
    )


def _claim() -> SubsidyClaim:
    (claim,) = claims_build(at=APRIL, now=MAY_20)
    return claim


def test_the_claim_shows_the_companys_taxpayer_id_and_the_invoices_fapiao(
    paid_march: Invoice, fapiao_of_march: Any, issuer: Any, make_client: Any
) -> None:
    claim = _claim()
    client = make_client(issuer)

    lines = client.get(f"/api/v1/claims/{claim.pk}/").json()["lines"]
    rows = list(csv.reader(io.StringIO(client.get(f"/api/v1/claims/{claim.pk}/evidence.csv").content.decode())))

    assert {(line["company_taxpayer_id"], line["fapiao_numbers"]) for line in lines} == {(TAXPAYER_ID, NUMBER)}
    header = rows.index(next(row for row in rows if row and row[0] == "line"))
    evidence = [dict(zip(rows[header], row, strict=True)) for row in rows[header + 1 :]]
    assert {(row["company_taxpayer_id"], row["fapiao_numbers"]) for row in evidence} == {(TAXPAYER_ID, NUMBER)}


def test_the_claim_pdf_shows_the_taxpayer_id_and_fapiao_number(
    paid_march: Invoice, fapiao_of_march: Any, issuer: Any
) -> None:
    claim = _claim()
    member_set(organization=issuer, username="issuer-member", password="pw-for-the-test")
    client = Client()
    assert client.login(username="issuer-member", password="pw-for-the-test")

    text = pdf_text(client.get(f"/dashboard/{issuer.slug}/claims/{claim.pk}/pdf/").content)

    assert NUMBER in text and TAXPAYER_ID in text


def test_a_company_without_invoicing_details_or_fapiao_shows_its_credit_code_and_no_number(
    paid_march: Invoice, issuer: Any, make_client: Any
) -> None:
    claim = _claim()

    lines = make_client(issuer).get(f"/api/v1/claims/{claim.pk}/").json()["lines"]

    assert {(line["company_taxpayer_id"], line["fapiao_numbers"]) for line in lines} == {
        (paid_march.buyer.credit_code, "")
    }


def test_the_program_reports_csv_carries_taxpayer_ids_and_fapiao_numbers(
    paid_march: Invoice, fapiao_of_march: Any, issuer: Any, make_client: Any
) -> None:
    program = paid_march.buyer.vouchers.get().program

    answer = make_client(issuer).get(f"/api/v1/voucher-programs/{program.pk}/report/?format=csv")

    rows = list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))
    company_header = rows.index(["by_company"]) + 1
    company = dict(zip(rows[company_header], rows[company_header + 1], strict=True))
    assert company["taxpayer_id"] == TAXPAYER_ID
    header = rows.index(["redemptions"]) + 1
    trail = [dict(zip(rows[header], row, strict=True)) for row in rows[header + 1 :]]
    assert trail and {(row["company_taxpayer_id"], row["fapiao_numbers"]) for row in trail} == {(TAXPAYER_ID, NUMBER)}
