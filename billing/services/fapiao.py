"""Fapiao: a buyer requests one for a finalized or paid invoice; an operator records it issued,
and records the red-letter fapiao that reverses it before the invoice may be voided.

Statuses: ``requested`` -> ``issued`` -> ``reversed``; a request not issued yet when its
invoice is voided is ``cancelled`` by the void. One active (requested or issued) request per
invoice, enforced by a partial unique index; after a red-letter reversal the buyer may ask again
(a fapiao issued with a wrong title is reversed and issued anew).
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from billing.locks import invoice_lock
from billing.models import FapiaoFile, FapiaoRequest, Invoice
from core.exceptions import ApplicationError, ConflictError, PayloadTooLarge, RuleViolation
from core.money import format_yuan
from organizations.models import InvoicingDetails, Organization
from organizations.services import audit_record

Status = FapiaoRequest.Status
INVOICEABLE = (Invoice.Status.FINALIZED, Invoice.Status.PAID)

FAPIAO_REQUEST = "fapiao.request"
FAPIAO_ISSUE = "fapiao.issue"
FAPIAO_REVERSE = "fapiao.reverse"
FAPIAO_CANCEL = "fapiao.cancel"

# A fully digitized e-fapiao (全电发票) has a 20-digit number and no code; an older one an
# 8-digit number under a 10- or 12-digit code.
_NUMBER = re.compile(r"^(\d{8}|\d{20})$")
_CODE = re.compile(r"^(\d{10}|\d{12})?$")
# What the tax system gives: PDF, OFD (a ZIP container) or XML; told by the first bytes, not the name.
FILE_TYPES = {
    "application/pdf": (b"%PDF-",),
    "application/ofd": (b"PK\x03\x04",),
    "application/xml": (b"<?xml",),
}


@dataclass(frozen=True)
class Upload:
    name: str
    content: bytes


def fapiao_request(*, invoice: Invoice, kind: str, by: str, now: datetime | None = None) -> tuple[FapiaoRequest, bool]:
    """The buyer asks for a fapiao of ``invoice``. Asking again for the same kind returns the active
    request (``created`` False): a retry never makes a second one. Returns (request, created)."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = invoice_lock(invoice_id=invoice.pk, buyer=False)
        active = FapiaoRequest.objects.filter(invoice=locked, status__in=FapiaoRequest.ACTIVE).first()
        if active is not None:
            if active.kind != kind:
                raise ConflictError(
                    _(
                        "A %(kind)s fapiao is already %(status)s for this invoice; a fapiao of another kind "
                        "needs the first reversed by a red-letter fapiao."
                    )
                    % {"kind": active.kind, "status": active.status},
                    code="fapiao_already_requested",
                )
            return active, False
        if locked.status not in INVOICEABLE:
            raise ConflictError(
                _("A fapiao is issued for a finalized or paid invoice; this one is %(status)s.")
                % {"status": locked.status},
                code="invoice_not_invoiceable",
            )
        details = _details_for(locked.buyer, kind)
        request = FapiaoRequest.objects.create(
            invoice=locked,
            buyer=locked.buyer,
            kind=kind,
            title=details.title,
            taxpayer_id=details.taxpayer_id,
            address=details.address,
            phone=details.phone,
            bank_name=details.bank_name,
            bank_account=details.bank_account,
            amount=locked.subtotal,
            tax=locked.tax,
            currency=locked.currency,
            requested_at=now,
            requested_by=by,
        )
        audit_record(
            actor=by,
            action=FAPIAO_REQUEST,
            target=request,
            organization=locked.buyer,
            summary={"invoice": locked.number, "kind": kind, "amount": format_yuan(request.amount)},
        )
    return request, True


def _details_for(buyer: Organization, kind: str) -> InvoicingDetails:
    details = InvoicingDetails.objects.filter(organization=buyer).first()
    if details is None:
        raise RuleViolation(
            _("Keep your invoicing details first (PUT /api/v1/invoicing-details/): title and taxpayer id."),
            code="invoicing_details_missing",
        )
    if kind == FapiaoRequest.Kind.SPECIAL and not details.special_ready:
        missing = [name for name in ("address", "phone", "bank_name", "bank_account") if not getattr(details, name)]
        raise RuleViolation(
            _("A special VAT fapiao carries the buyer's address, phone, bank and account; missing: %(missing)s.")
            % {"missing": ", ".join(missing)},
            code="invoicing_details_incomplete",
            fields={name: [{"code": "required", "message": _("Needed for a special fapiao.")}] for name in missing},
        )
    return details


def _checked_numbers(number: str, code: str, prefix: str = "") -> None:
    errors: dict[str, list[dict[str, str]]] = {}
    if not _NUMBER.match(number):
        errors[f"{prefix}number"] = [{"code": "invalid", "message": _("8 digits, or 20 for a fully digitized fapiao.")}]
    if not _CODE.match(code) or (len(number) == 8 and not code):
        errors[f"{prefix}code"] = [
            {"code": "invalid", "message": _("10 or 12 digits; required with an 8-digit number, empty with 20.")}
        ]
    if errors:
        raise ApplicationError(
            _("The fapiao number or code is not as the tax system gives it."),
            code="invalid_fapiao_number",
            fields=errors,
        )


def _stored_file(upload: Upload, now: datetime) -> FapiaoFile:
    if len(upload.content) > settings.FAPIAO_FILE_MAX_BYTES:
        raise PayloadTooLarge(
            _("The fapiao file is %(size)s bytes; at most %(limit)s are kept.")
            % {"size": len(upload.content), "limit": settings.FAPIAO_FILE_MAX_BYTES},
            code="file_too_large",
        )
    content_type = next(
        (kind for kind, magics in FILE_TYPES.items() if upload.content.startswith(magics)),
        None,
    )
    if content_type is None:
        raise ApplicationError(
            _("The fapiao file must be a PDF, an OFD or an XML file as the tax system gives it."),
            code="unsupported_file_type",
            fields={"file": [{"code": "unsupported_file_type", "message": _("PDF, OFD or XML.")}]},
        )
    name = re.sub(r"[^\w.\-]", "_", upload.name)[-200:] or "fapiao"
    return FapiaoFile.objects.create(
        name=name,
        content_type=content_type,
        size=len(upload.content),
        sha256=hashlib.sha256(upload.content).hexdigest(),
        content=upload.content,
        uploaded_at=now,
    )


@transaction.atomic
def fapiao_issue(
    *, request_id: Any, number: str, code: str, issued_on: date, upload: Upload, by: str, now: datetime | None = None
) -> FapiaoRequest:
    """The operator records the fapiao issued for a request. Recording the same number again
    returns the request as it is (a retry); another number for an issued fapiao is a 409."""
    now = now or timezone.now()
    request = FapiaoRequest.objects.select_for_update().select_related("invoice").get(pk=request_id)
    if request.status == Status.ISSUED and (request.number, request.code) == (number, code):
        return request
    if request.status != Status.REQUESTED:
        raise ConflictError(
            _("This fapiao request is %(status)s; only a requested one is issued.") % {"status": request.status},
            code="fapiao_not_requested",
        )
    _checked_numbers(number, code)
    _refuse_taken(number, code)
    request.file = _stored_file(upload, now)
    request.number, request.code, request.issued_on = number, code, issued_on
    request.status, request.issued_at, request.issued_by = Status.ISSUED, now, by
    request.save(update_fields=["file", "number", "code", "issued_on", "status", "issued_at", "issued_by"])
    audit_record(
        actor=by,
        action=FAPIAO_ISSUE,
        target=request,
        organization=request.buyer,
        summary={"invoice": request.invoice.number, "number": number, "code": code, "issued_on": str(issued_on)},
    )
    return request


@transaction.atomic
def fapiao_reverse(
    *, request_id: Any, number: str, code: str, issued_on: date, upload: Upload, by: str, now: datetime | None = None
) -> FapiaoRequest:
    """The operator records the red-letter fapiao (红字发票) that reverses an issued one; its invoice
    may then be voided (or the buyer ask for a new fapiao). A retry with the same number returns it."""
    now = now or timezone.now()
    request = FapiaoRequest.objects.select_for_update().select_related("invoice").get(pk=request_id)
    if request.status == Status.REVERSED and (request.red_number, request.red_code) == (number, code):
        return request
    if request.status != Status.ISSUED:
        raise ConflictError(
            _("Only an issued fapiao is reversed; this one is %(status)s.") % {"status": request.status},
            code="fapiao_not_issued",
        )
    _checked_numbers(number, code)
    _refuse_taken(number, code)
    request.red_file = _stored_file(upload, now)
    request.red_number, request.red_code, request.red_issued_on = number, code, issued_on
    request.status, request.reversed_at, request.reversed_by = Status.REVERSED, now, by
    request.save(
        update_fields=["red_file", "red_number", "red_code", "red_issued_on", "status", "reversed_at", "reversed_by"]
    )
    audit_record(
        actor=by,
        action=FAPIAO_REVERSE,
        target=request,
        organization=request.buyer,
        summary={"invoice": request.invoice.number, "number": request.number, "red_number": number},
    )
    return request


def _refuse_taken(number: str, code: str) -> None:
    taken = (
        FapiaoRequest.objects.filter(code=code, number=number).exists()
        or FapiaoRequest.objects.filter(red_code=code, red_number=number).exists()
    )
    if taken:
        raise ConflictError(
            _("Fapiao %(number)s is already recorded; each fapiao is recorded once.") % {"number": number},
            code="fapiao_number_taken",
        )


def fapiao_void_check(*, invoice: Invoice, by: str, now: datetime, only_check: bool = False) -> None:
    """Called by the void of ``invoice`` (locked) before anything changes: an issued fapiao must be
    reversed by a red-letter fapiao first (409 ``fapiao_red_letter_required``: the buyer may have
    expensed it, and the books of both sides need the reversal); a request not issued yet is cancelled."""
    issued = FapiaoRequest.objects.filter(invoice=invoice, status=Status.ISSUED).first()
    if issued is not None:
        raise ConflictError(
            _(
                "Fapiao %(number)s was issued for this invoice: record its red-letter reversal "
                "(POST /api/v1/fapiao-requests/%(id)s/red-letter/) before voiding the invoice."
            )
            % {"number": issued.number, "id": issued.pk},
            code="fapiao_red_letter_required",
        )
    if only_check:
        return
    for request in FapiaoRequest.objects.select_for_update().filter(invoice=invoice, status=Status.REQUESTED):
        request.status, request.cancelled_at = Status.CANCELLED, now
        request.save(update_fields=["status", "cancelled_at"])
        audit_record(
            actor=by,
            action=FAPIAO_CANCEL,
            target=request,
            organization=invoice.buyer,
            summary={"invoice": invoice.number, "reason": "invoice voided before the fapiao was issued"},
        )
