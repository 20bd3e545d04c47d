"""Fapiao: the buyer's invoicing details, its requests, the operator recording the fapiao issued
and the red-letter reversal that a void of the invoice waits for."""

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction

from billing.models import FapiaoRequest, Invoice
from billing.services.fapiao import fapiao_request
from billing.services.invoices import invoice_finalize, invoice_void
from billing.services.reconcile import reconcile
from core.exceptions import ConflictError
from organizations.models import AuditEvent
from organizations.validators import credit_code_check_char
from tests.billing.factories import leased, usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db

CODE = "91110108" + "MA01ABCD" + "X"  # 17 characters
TAXPAYER_ID = CODE + credit_code_check_char(CODE)
PDF = b"%PDF-1.7\n% a fapiao\n" + b"0" * 200
DETAILS = {"title": "Nantong Smart Manufacturing Co., Ltd.", "taxpayer_id": TAXPAYER_ID}
SPECIAL = {
    **DETAILS,
    "address": "1 Gongnong Road, Nantong",
    "phone": "0513-81234567",
    "bank_name": "Bank of China Nantong Branch",
    "bank_account": "4612 5800 1234 5678",
}


@pytest.fixture
def march(buyer, provider) -> Invoice:  # type: ignore[no-untyped-def]
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(2, 12), seconds=8 * 3600)
    return invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)


@pytest.fixture
def operator_client(operator, make_client):  # type: ignore[no-untyped-def]
    return make_client(operator)


def _issue(client: Any, request_id: Any, number: str = "26112000000000000001", code: str = "", **changes: Any) -> Any:
    body = {"number": number, "code": code, "issued_on": "2026-04-08", **changes}
    body.setdefault("file", SimpleUploadedFile("fapiao.pdf", PDF, content_type="application/pdf"))
    return client.post(f"/api/v1/fapiao-requests/{request_id}/issue/", body, format="multipart")


def _red_letter(client: Any, request_id: Any, number: str = "26112000000000000002") -> Any:
    body = {
        "number": number,
        "issued_on": "2026-04-20",
        "file": SimpleUploadedFile("red.pdf", PDF + b"red", content_type="application/pdf"),
    }
    return client.post(f"/api/v1/fapiao-requests/{request_id}/red-letter/", body, format="multipart")


# --- invoicing details -----------------------------------------------------------------------


def test_the_buyer_keeps_its_invoicing_details_and_the_change_is_audited(buyer_client, buyer) -> None:
    assert buyer_client.get("/api/v1/invoicing-details/").status_code == 404

    answer = buyer_client.put("/api/v1/invoicing-details/", SPECIAL, format="json")

    assert answer.status_code == 200, answer.json()
    assert answer.json()["taxpayer_id"] == TAXPAYER_ID and answer.json()["special_ready"] is True
    assert buyer_client.get("/api/v1/invoicing-details/").json()["bank_account"] == SPECIAL["bank_account"]
    event = AuditEvent.objects.get(action="invoicing_details.set")
    assert event.organization_id == buyer.pk and "bank_account" in event.summary["changed"]


@pytest.mark.parametrize(
    "taxpayer_id",
    [
        CODE + ("0" if credit_code_check_char(CODE) != "0" else "1"),  # wrong check character
        TAXPAYER_ID[:17],  # 17 characters
        TAXPAYER_ID[:16] + "I" + TAXPAYER_ID[17],  # a letter the code does not use
    ],
)
def test_a_taxpayer_id_that_is_no_unified_social_credit_code_is_refused(buyer_client, taxpayer_id: str) -> None:
    answer = buyer_client.put("/api/v1/invoicing-details/", {**DETAILS, "taxpayer_id": taxpayer_id}, format="json")

    assert answer.status_code == 400
    assert "taxpayer_id" in answer.json()["error"]["fields"]
    assert buyer_client.get("/api/v1/invoicing-details/").status_code == 404


# --- requests ------------------------------------------------------------------------------


def test_a_fapiao_needs_invoicing_details_and_a_special_one_the_bank(buyer_client, march) -> None:
    url = f"/api/v1/invoices/{march.pk}/fapiao/"
    missing = buyer_client.post(url, {"kind": "ordinary"}, format="json")
    assert (missing.status_code, missing.json()["error"]["code"]) == (422, "invoicing_details_missing")

    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    special = buyer_client.post(url, {"kind": "special"}, format="json")

    assert (special.status_code, special.json()["error"]["code"]) == (422, "invoicing_details_incomplete")
    assert set(special.json()["error"]["fields"]) == {"address", "phone", "bank_name", "bank_account"}
    assert not FapiaoRequest.objects.exists()


def test_requesting_a_fapiao_twice_returns_the_first_request(buyer_client, march) -> None:
    buyer_client.put("/api/v1/invoicing-details/", SPECIAL, format="json")
    url = f"/api/v1/invoices/{march.pk}/fapiao/"

    first = buyer_client.post(url, {"kind": "special"}, format="json")
    again = buyer_client.post(url, {"kind": "special"}, format="json")
    other = buyer_client.post(url, {"kind": "ordinary"}, format="json")

    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["amount"] == "%.2f" % (march.subtotal / 100)
    assert first.json()["tax"] == "%.2f" % (march.tax / 100)
    assert (other.status_code, other.json()["error"]["code"]) == (409, "fapiao_already_requested")
    assert FapiaoRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_requests_at_once_make_one(buyer, march) -> None:  # type: ignore[no-untyped-def]
    from organizations.services import invoicing_details_set

    invoicing_details_set(organization=buyer, by="test", **DETAILS)
    run_concurrently([lambda: fapiao_request(invoice=march, kind="ordinary", by="test") for _ in range(8)])

    assert FapiaoRequest.objects.filter(invoice=march).count() == 1


def test_a_draft_invoice_gets_no_fapiao(buyer_client, buyer) -> None:
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    draft = march_invoice(buyer)

    answer = buyer_client.post(f"/api/v1/invoices/{draft.pk}/fapiao/", {"kind": "ordinary"}, format="json")

    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "invoice_not_invoiceable")


def test_the_database_keeps_one_active_request_per_invoice(buyer, march) -> None:
    from organizations.services import invoicing_details_set

    invoicing_details_set(organization=buyer, by="test", **DETAILS)
    first, _ = fapiao_request(invoice=march, kind="ordinary", by="test")
    first.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        first.save(force_insert=True)


# --- issuing -------------------------------------------------------------------------------


def test_the_operator_records_the_fapiao_and_the_invoice_shows_it(buyer_client, operator_client, march) -> None:
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    request_id = buyer_client.post(f"/api/v1/invoices/{march.pk}/fapiao/", {"kind": "ordinary"}, format="json").json()[
        "id"
    ]
    waiting = operator_client.get("/api/v1/fapiao-requests/?status=requested").json()["results"]
    assert [row["id"] for row in waiting] == [request_id]

    issued = _issue(operator_client, request_id)

    assert issued.status_code == 200, issued.json()
    shown = buyer_client.get(f"/api/v1/invoices/{march.pk}/").json()["fapiao"]
    assert (shown["status"], shown["number"], shown["issued_on"]) == ("issued", "26112000000000000001", "2026-04-08")
    download = buyer_client.get(f"/api/v1/fapiao-requests/{request_id}/file/")
    assert download.status_code == 200 and download.content == PDF
    assert download["Content-Type"] == "application/pdf"
    assert AuditEvent.objects.filter(action="fapiao.issue", target_id=request_id).count() == 1
    # a retry of the same record changes nothing; another number for it is refused
    assert _issue(operator_client, request_id).status_code == 200
    assert _issue(operator_client, request_id, number="26112000000000000009").json()["error"]["code"] == (
        "fapiao_not_requested"
    )


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"number": "1234"}, 400, "invalid_fapiao_number"),
        ({"number": "12345678", "code": ""}, 400, "invalid_fapiao_number"),  # an 8-digit number has a code
        ({"file": SimpleUploadedFile("fapiao.exe", b"MZ\x90\x00" * 100)}, 400, "unsupported_file_type"),
    ],
)
def test_a_bad_fapiao_record_is_refused_and_changes_nothing(
    buyer_client, operator_client, march, changes: dict, status: int, code: str
) -> None:
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    request_id = buyer_client.post(f"/api/v1/invoices/{march.pk}/fapiao/", {"kind": "ordinary"}, format="json").json()[
        "id"
    ]

    answer = _issue(operator_client, request_id, **changes)

    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert FapiaoRequest.objects.get(pk=request_id).status == "requested"


def test_a_fapiao_file_larger_than_the_limit_is_a_413(buyer_client, operator_client, march, settings) -> None:  # type: ignore[no-untyped-def]
    settings.FAPIAO_FILE_MAX_BYTES = 1024
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    request_id = buyer_client.post(f"/api/v1/invoices/{march.pk}/fapiao/", {"kind": "ordinary"}, format="json").json()[
        "id"
    ]

    answer = _issue(operator_client, request_id, file=SimpleUploadedFile("big.pdf", PDF + b"0" * 2048))

    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "file_too_large")


def test_a_buyer_records_no_fapiao_and_sees_no_other_buyers(buyer_client, other_buyer_client, march) -> None:  # type: ignore[no-untyped-def]
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    request_id = buyer_client.post(f"/api/v1/invoices/{march.pk}/fapiao/", {"kind": "ordinary"}, format="json").json()[
        "id"
    ]

    assert _issue(buyer_client, request_id).status_code == 403
    assert other_buyer_client.get(f"/api/v1/fapiao-requests/{request_id}/").status_code == 404
    assert other_buyer_client.get(f"/api/v1/fapiao-requests/{request_id}/file/").status_code == 404
    assert other_buyer_client.get(f"/api/v1/invoices/{march.pk}/fapiao/").status_code == 404
    assert other_buyer_client.get("/api/v1/fapiao-requests/").json()["results"] == []


# --- void and red letter -------------------------------------------------------------------


def test_voiding_an_invoice_with_an_issued_fapiao_waits_for_its_red_letter_reversal(
    buyer_client, operator_client, march
) -> None:
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    request_id = buyer_client.post(f"/api/v1/invoices/{march.pk}/fapiao/", {"kind": "ordinary"}, format="json").json()[
        "id"
    ]
    _issue(operator_client, request_id)

    refused = operator_client.post(f"/api/v1/invoices/{march.pk}/void/", {}, format="json")

    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "fapiao_red_letter_required")
    assert Invoice.objects.get(pk=march.pk).status == "finalized"

    reversed_ = _red_letter(operator_client, request_id)
    voided = operator_client.post(f"/api/v1/invoices/{march.pk}/void/", {}, format="json")

    assert reversed_.status_code == 200, reversed_.json()
    assert (reversed_.json()["status"], reversed_.json()["red_number"]) == ("reversed", "26112000000000000002")
    assert voided.status_code == 200 and voided.json()["status"] == "void"
    assert voided.json()["fapiao"]["status"] == "reversed"
    red = buyer_client.get(f"/api/v1/fapiao-requests/{request_id}/file/?red_letter=true")
    assert red.content == PDF + b"red"
    actions = set(AuditEvent.objects.filter(target_id=request_id).values_list("action", flat=True))
    assert actions == {"fapiao.request", "fapiao.issue", "fapiao.reverse"}
    assert reconcile() == []


def test_a_red_letter_fapiao_reverses_only_an_issued_one(buyer_client, operator_client, march) -> None:
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    request_id = buyer_client.post(f"/api/v1/invoices/{march.pk}/fapiao/", {"kind": "ordinary"}, format="json").json()[
        "id"
    ]

    answer = _red_letter(operator_client, request_id)

    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "fapiao_not_issued")


def test_voiding_cancels_a_request_not_issued_yet(buyer, march) -> None:  # type: ignore[no-untyped-def]
    from organizations.services import invoicing_details_set

    invoicing_details_set(organization=buyer, by="test", **DETAILS)
    request, _ = fapiao_request(invoice=march, kind="ordinary", by="test")

    invoice_void(invoice_id=march.pk, by="operator", now=APRIL_5)

    request.refresh_from_db()
    assert request.status == "cancelled" and request.cancelled_at is not None
    with pytest.raises(ConflictError, match="finalized or paid"):
        fapiao_request(invoice=march, kind="ordinary", by="test")


def test_after_a_red_letter_reversal_the_buyer_may_ask_again(buyer_client, operator_client, march) -> None:
    buyer_client.put("/api/v1/invoicing-details/", DETAILS, format="json")
    url = f"/api/v1/invoices/{march.pk}/fapiao/"
    first = buyer_client.post(url, {"kind": "ordinary"}, format="json").json()["id"]
    _issue(operator_client, first)
    _red_letter(operator_client, first)

    second = buyer_client.post(url, {"kind": "ordinary"}, format="json")

    assert second.status_code == 201 and second.json()["id"] != first
    # one fapiao number is recorded once
    taken = _issue(operator_client, second.json()["id"], number="26112000000000000001")
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "fapiao_number_taken")


def test_operators_read_fapiao_requests_in_the_admin(admin_client, buyer, march) -> None:  # type: ignore[no-untyped-def]
    from organizations.services import invoicing_details_set

    invoicing_details_set(organization=buyer, by="test", **DETAILS)
    request, _ = fapiao_request(invoice=march, kind="ordinary", by="test")

    assert admin_client.get("/admin/billing/fapiaorequest/").status_code == 200
    page = admin_client.get(f"/admin/billing/fapiaorequest/{request.pk}/change/")
    assert page.status_code == 200 and TAXPAYER_ID in page.content.decode()
