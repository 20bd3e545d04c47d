"""The invoice's VAT split and its fapiao on the print view, the PDF and the buyer's page; the
fapiao requests waiting on the operator's page."""

import pytest

from billing.services.fapiao import Upload, fapiao_issue, fapiao_request
from organizations.services import invoicing_details_set
from tests.dashboards.scenario import Grid, build_grid
from tests.dashboards.test_pages import figures, pdf_text, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def grid() -> Grid:
    return build_grid()


def _requested(grid: Grid):  # type: ignore[no-untyped-def]
    invoicing_details_set(
        organization=grid.buyer, title=grid.buyer.legal_name, taxpayer_id=grid.buyer.credit_code, by="test"
    )
    return fapiao_request(invoice=grid.invoice, kind="ordinary", by="test")[0]


def test_the_print_view_shows_each_lines_vat_and_the_invoices_as_the_api_does(grid, make_client) -> None:
    invoice = make_client(grid.buyer).get(f"/api/v1/invoices/{grid.invoice.pk}/").json()

    html = signed_in(grid, grid.buyer).get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/").content
    html = html.decode()

    assert figures(html, "line-tax") == [line["tax"] for line in invoice["lines"]]
    assert figures(html, "line-amount-without-tax") == [line["amount_without_tax"] for line in invoice["lines"]]
    assert (
        figures(html, "line-vat-rate")
        == [line["vat_rate"] for line in invoice["lines"]]
        == ["0.0600"] * len(invoice["lines"])
    )
    assert figures(html, "invoice-tax") == [invoice["tax"]] and grid.invoice.tax > 0
    assert figures(html, "invoice-subtotal-without-tax") == [invoice["subtotal_without_tax"]]


def test_an_issued_fapiao_shows_on_the_invoice_its_pdf_and_the_buyers_page(grid) -> None:
    request = _requested(grid)
    fapiao_issue(
        request_id=request.pk,
        number="26112000000000000042",
        code="",
        issued_on=grid.invoice.finalized_at.date(),
        upload=Upload(name="f.pdf", content=b"%PDF-1.7 x"),
        by="operator",
    )
    client = signed_in(grid, grid.buyer)

    html = client.get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/").content.decode()
    pdf = pdf_text(client.get(f"/dashboard/{grid.buyer.slug}/invoices/{grid.invoice.pk}/pdf/").content)
    page = client.get(f"/dashboard/{grid.buyer.slug}/").content.decode()

    assert figures(html, "fapiao-number") == ["26112000000000000042"]
    assert "26112000000000000042" in pdf
    assert figures(page, "invoice-fapiao") == ["issued"]
    assert "26112000000000000042" in page


def test_the_operator_page_lists_fapiao_requests_waiting(grid) -> None:
    client = signed_in(grid, grid.operator)
    before = client.get(f"/dashboard/{grid.operator.slug}/")
    assert figures(before.content.decode(), "fapiao-waiting-count") == ["0"]
    request = _requested(grid)

    answer = client.get(f"/dashboard/{grid.operator.slug}/")

    assert [waiting.pk for waiting in answer.context["fapiao_waiting"]] == [request.pk]
    assert figures(answer.content.decode(), "fapiao-waiting-count") == ["1"]
    assert f'data-fapiao="{request.pk}"' in answer.content.decode()
