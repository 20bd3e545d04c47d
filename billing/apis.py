from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.cloudevents import MAX_BYTES, events_from_request
from billing.models import BankMovement, FapiaoRequest, Invoice, ProviderStatement, TopUp
from billing.schema import BINARY_HEADERS
from billing.selectors import bank_movements, bank_summary, invoice_list, invoice_view, statement_list, usage_series
from billing.serializers import (
    BankDepositSerializer,
    BankMovementSerializer,
    BankSerializer,
    BankSettingsSerializer,
    BankTransferSerializer,
    DepositEarnings,
    FapiaoRecordSerializer,
    FapiaoRequestCreateSerializer,
    FapiaoRequestSerializer,
    IngestResultSerializer,
    InvoicePaySerializer,
    InvoiceSerializer,
    InvoiceVoidSerializer,
    StatementSerializer,
    TopUpCreateSerializer,
    TopUpSerializer,
    UsageEventsBodySerializer,
    UsageQuerySerializer,
    UsageRowSerializer,
)
from billing.services import fapiao, invoices, payments
from billing.services.bank.grants import bank_settings_set
from billing.services.bank.top_ups import top_up_client_secret, top_up_create
from billing.services.usage import usage_events_ingest
from core.exceptions import ApplicationError, NotFoundError
from core.idempotency import idempotent
from marketplace.deposits import deposit_list, deposit_withdraw
from marketplace.models import CapacityDeposit
from organizations.models import Organization
from organizations.permissions import IsBuyer, IsProvider, KeyRoleAllows, allow_kinds, organization_of


class UsageEventsApi(APIView):
    """Provider agents report usage as CloudEvents 1.0.

    One event (`application/cloudevents+json`, or `application/json`; or binary mode: the
    attributes as `ce-*` headers and the event's `data` as the body), a batch
    (`application/cloudevents-batch+json`) or a JSON array (`application/json`): at most
    10,000 events and 10 MB. The schema below describes the events (`UsageEvent`) under
    `application/json`; the two CloudEvents media types take the same events.
    Types `compute.gpu_seconds` (`data.quantity` card-seconds, optional `data.cards`) and
    `compute.tokens` (`data.model`, `data.input_tokens`, `data.output_tokens`); `subject` is the
    lease id; `time` is when the usage happened. `source` + `id` identify an event forever:
    sending it again is a duplicate, not an error; the same key with other content is a conflict.
    Each bad event is rejected on its own with a code; the rest of the batch is kept.
    """

    permission_classes = [KeyRoleAllows, IsProvider]
    max_body_bytes = MAX_BYTES  # core.middleware.RequestLimitsMiddleware
    throttle_scope = "ingest"

    @extend_schema(
        request={"application/json": UsageEventsBodySerializer},
        parameters=BINARY_HEADERS,
        responses=IngestResultSerializer,
        summary="Report usage events",
        extensions={"x-body-required": True},  # core.schema: without one it is a 415
        examples=[
            OpenApiExample(
                "A card-seconds event",
                value=[
                    {
                        "specversion": "1.0",
                        "id": "evt-000001",
                        "source": "agent://west-cloud/pool-7",
                        "type": "compute.gpu_seconds",
                        "subject": "7f4c3f2e-0000-4000-8000-000000000001",
                        "time": "2026-03-01T08:00:00Z",
                        "data": {"quantity": 480, "cards": 8},
                    }
                ],
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        events = events_from_request(request.content_type or "", request.headers, request.body)
        result = usage_events_ingest(provider_id=organization_of(request).pk, events=events)
        return Response(IngestResultSerializer(result).data)


class UsageApi(APIView):
    """Rolled-up usage: buyers see their leases, providers their pools."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER, Organization.Kind.PROVIDER)]

    @extend_schema(parameters=[UsageQuerySerializer], responses=UsageRowSerializer(many=True), summary="Usage")
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = usage_series(organization=organization_of(request), **query.validated_data)
        return Response(UsageRowSerializer(rows, many=True).data)


IsBuyerOrOperator = allow_kinds(Organization.Kind.BUYER, Organization.Kind.OPERATOR)
IsProviderOrOperator = allow_kinds(Organization.Kind.PROVIDER, Organization.Kind.OPERATOR)


def _invoice_for(request: Request, invoice_id: Any) -> Invoice:
    invoice = invoice_list(organization=organization_of(request)).filter(pk=invoice_id).first()
    if invoice is None:
        raise NotFoundError(gettext("No such invoice."))
    return invoice


def _invoice_data(invoice: Invoice) -> dict[str, Any]:
    return InvoiceSerializer(invoice_view(invoice)).data


class InvoiceListApi(ListAPIView):
    """Buyers: their invoices, the current month's draft growing with usage. Operators: all."""

    serializer_class = InvoiceSerializer
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[Invoice]:
        if getattr(self, "swagger_fake_view", False):
            return Invoice.objects.none()
        return invoice_list(organization=organization_of(self.request)).prefetch_related("lines", "fapiao_requests")

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            args = ([invoice_view(invoice) for invoice in args[0]], *args[1:])
        return super().get_serializer(*args, **kwargs)


class InvoiceDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]

    @extend_schema(responses=InvoiceSerializer)
    def get(self, request: Request, invoice_id: Any) -> Response:
        return Response(_invoice_data(_invoice_for(request, invoice_id)))


class InvoicePayApi(APIView):
    """Buyer: collect what the invoice owes through Stripe now (optionally saving a new card first)."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]
    throttle_scope = "payments"

    @extend_schema(
        request=InvoicePaySerializer,
        responses=InvoiceSerializer,
        summary="Pay an invoice",
        extensions={  # core.schema documents its 503 and its codes
            "x-calls-stripe": True,
            "x-error-codes": {
                "409": {
                    "invoice_not_payable": "the invoice is not finalized or uncollectible",
                    "no_payment_method": (
                        "no card on file and no `payment_method` given; send one (a Stripe PaymentMethod id "
                        "made with Stripe.js) or pay by bank transfer; nothing was recorded"
                    ),
                }
            },
        },
    )
    @idempotent
    def post(self, request: Request, invoice_id: Any) -> Response:
        invoice = _invoice_for(request, invoice_id)
        body = InvoicePaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payments.invoice_pay(invoice=invoice, payment_method=body.validated_data.get("payment_method"))
        return Response(_invoice_data(_invoice_for(request, invoice_id)))


class InvoiceVoidApi(APIView):
    """Operator: void a finalized or paid invoice; everything it moved is reversed, what it received given back."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.OPERATOR)]

    @extend_schema(
        request=InvoiceVoidSerializer,
        responses=InvoiceSerializer,
        summary="Void an invoice",
        extensions={  # core.schema documents its 503 and its codes
            "x-calls-stripe": True,
            "x-error-codes": {
                "409": {
                    "invoice_not_voidable": "the invoice is not finalized, paid or uncollectible",
                    "claim_line_rejected": "its issuer rejected a voucher claim line of it, billed back to the buyer",
                    "fapiao_red_letter_required": (
                        "a fapiao was issued for it: record its red-letter reversal "
                        "(fapiao-requests/{id}/red-letter/) first; nothing changed"
                    ),
                    "payment_in_flight": (
                        "a card payment of the invoice is being collected or processed at Stripe; nothing "
                        "changed, try again in a few minutes"
                    ),
                }
            },
        },
    )
    def post(self, request: Request, invoice_id: Any) -> Response:
        body = InvoiceVoidSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = _invoice_for(request, invoice_id)
        invoices.invoice_void(invoice_id=invoice.pk, by=str(request.user), reason=body.validated_data["reason"])
        return Response(_invoice_data(_invoice_for(request, invoice_id)))


class InvoiceBankTransferApi(APIView):
    """Operator: record a bank transfer received for an invoice."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.OPERATOR)]
    throttle_scope = "payments"

    @extend_schema(request=BankTransferSerializer, responses=InvoiceSerializer, summary="Record a bank transfer")
    @idempotent
    def post(self, request: Request, invoice_id: Any) -> Response:
        body = BankTransferSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = _invoice_for(request, invoice_id)
        payments.bank_transfer_record(invoice=invoice, amount=body.validated_data["amount"], by=str(request.user))
        return Response(_invoice_data(_invoice_for(request, invoice_id)))


class StatementListApi(ListAPIView):
    """Providers: gross usage, the platform's commission and net payable, per period."""

    serializer_class = StatementSerializer
    permission_classes = [KeyRoleAllows, IsProviderOrOperator]

    def get_queryset(self) -> QuerySet[ProviderStatement]:
        if getattr(self, "swagger_fake_view", False):
            return ProviderStatement.objects.none()
        return statement_list(organization=organization_of(self.request))


class StripeWebhookApi(APIView):
    """Stripe's events, signature checked; each event id is processed once."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_scope = "webhooks"  # by the sender's address: there is no key

    @extend_schema(
        request={"application/json": {"type": "object", "description": "A Stripe event."}},
        parameters=[
            OpenApiParameter(
                "Stripe-Signature",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="Stripe's signature of the body; a request it does not verify is a 400.",
            )
        ],
        responses={200: {"type": "object", "properties": {"received": {"type": "boolean"}}}},
        summary="Stripe webhook",
        extensions={  # core.schema documents its codes
            "x-error-codes": {
                "400": {
                    "invalid_signature": "the signature does not verify, or is older or newer than the tolerance",
                    "unprocessable_webhook": (
                        "the signature verifies but the body is not a Stripe event this service can read; "
                        "it was kept for inspection"
                    ),
                }
            }
        },
    )
    def post(self, request: Request) -> Response:
        record = payments.webhook_receive(payload=request.body, signature=request.headers.get("Stripe-Signature"))
        payments.webhook_process(event_id=record.pk)
        return Response({"received": True})


# --- compute bank --------------------------------------------------------------


class BankApi(APIView):
    """Buyer: its compute bank: balance, held and available credit, grants with expiry, holds, events."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]

    @extend_schema(responses=BankSerializer, summary="The compute bank")
    def get(self, request: Request) -> Response:
        return Response(BankSerializer(bank_summary(buyer=organization_of(request), at=timezone.now())).data)

    @extend_schema(
        request=BankSettingsSerializer, responses=BankSerializer, summary="Low-balance threshold and auto top-up"
    )
    def patch(self, request: Request) -> Response:
        body = BankSettingsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        bank_settings_set(buyer=organization_of(request), changes=body.validated_data)
        return self.get(request)


class BankTransactionListApi(ListAPIView):
    """Buyer: every movement of its credit, newest first, with its reason and journal entry."""

    serializer_class = BankMovementSerializer
    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]

    def get_queryset(self) -> QuerySet[BankMovement]:
        if getattr(self, "swagger_fake_view", False):
            return BankMovement.objects.none()
        return bank_movements(buyer=organization_of(self.request))


def _with_client_secret(body: dict[str, Any]) -> dict[str, Any]:
    """A top-up's answer replayed for its Idempotency-Key: the stored answer has no client secret
    (the idempotency table keeps no secret), Stripe gives it again."""
    return {**body, "client_secret": top_up_client_secret(payment_intent_id=body["payment_intent"])}


class TopUpCreateApi(APIView):
    """Buyer: buy credit. Returns a Stripe PaymentIntent's client secret to confirm with Stripe.js;
    the credit is granted when Stripe confirms the payment (webhook). CNY only, up to BANK_TOP_UP_MAX_YUAN."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]
    throttle_scope = "payments"

    @extend_schema(request=TopUpCreateSerializer, responses={201: TopUpSerializer}, summary="Top up the bank")
    @idempotent(unstored=("client_secret",), on_replay=_with_client_secret)
    def post(self, request: Request) -> Response:
        body = TopUpCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        top_up, client_secret = top_up_create(buyer=organization_of(request), **body.validated_data)
        top_up.client_secret = client_secret  # type: ignore[attr-defined]
        return Response(TopUpSerializer(top_up).data, status=201)


class TopUpDetailApi(APIView):
    """Buyer: one of its top-ups, to see whether Stripe confirmed it (another buyer's: 404)."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]

    @extend_schema(responses=TopUpSerializer, summary="A top-up")
    def get(self, request: Request, top_up_id: Any) -> Response:
        top_up = TopUp.objects.filter(pk=top_up_id, buyer=organization_of(request)).first()
        if top_up is None:
            raise NotFoundError(gettext("No such top-up."))
        return Response(TopUpSerializer(top_up).data)


def _fapiao_requests(request: Request) -> QuerySet[FapiaoRequest]:
    organization = organization_of(request)
    requests = FapiaoRequest.objects.select_related("invoice", "buyer")
    if organization.kind == Organization.Kind.OPERATOR:
        return requests
    return requests.filter(buyer=organization)


def _fapiao_for(request: Request, request_id: Any) -> FapiaoRequest:
    found = _fapiao_requests(request).filter(pk=request_id).first()
    if found is None:
        raise NotFoundError(gettext("No such fapiao request."))
    return found


class InvoiceFapiaoApi(APIView):
    """Buyer: request a fapiao for a finalized or paid invoice; buyer and operator: the invoice's requests."""

    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [KeyRoleAllows(), IsBuyer()]
        return list(super().get_permissions())

    @extend_schema(responses=FapiaoRequestSerializer(many=True), summary="The fapiao requests of an invoice")
    def get(self, request: Request, invoice_id: Any) -> Response:
        invoice = _invoice_for(request, invoice_id)
        return Response(FapiaoRequestSerializer(_fapiao_requests(request).filter(invoice=invoice), many=True).data)

    @extend_schema(
        request=FapiaoRequestCreateSerializer,
        responses={201: FapiaoRequestSerializer, 200: FapiaoRequestSerializer},
        summary="Request a fapiao",
        description=(
            "201 with the new request; 200 with the active one when the same kind was requested already "
            "(a retry makes no second request)."
        ),
        extensions={
            "x-error-codes": {
                "409": {
                    "invoice_not_invoiceable": "the invoice is not finalized or paid",
                    "fapiao_already_requested": "a fapiao of the other kind is requested or issued for it",
                },
                "422": {
                    "invoicing_details_missing": "no invoicing details kept: PUT invoicing-details/ first",
                    "invoicing_details_incomplete": "a special fapiao needs address, phone, bank and account",
                },
            }
        },
    )
    def post(self, request: Request, invoice_id: Any) -> Response:
        body = FapiaoRequestCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = _invoice_for(request, invoice_id)
        made, created = fapiao.fapiao_request(invoice=invoice, kind=body.validated_data["kind"], by=str(request.user))
        return Response(FapiaoRequestSerializer(made).data, status=201 if created else 200)


class FapiaoRequestListApi(ListAPIView):
    """Buyers: their fapiao requests. Operators: all, ``?status=requested`` for those waiting."""

    serializer_class = FapiaoRequestSerializer
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]
    filterset_fields = ["status", "kind"]

    def get_queryset(self) -> QuerySet[FapiaoRequest]:
        if getattr(self, "swagger_fake_view", False):
            return FapiaoRequest.objects.none()
        return _fapiao_requests(self.request)


class FapiaoRequestDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]

    @extend_schema(responses=FapiaoRequestSerializer, summary="A fapiao request")
    def get(self, request: Request, request_id: Any) -> Response:
        return Response(FapiaoRequestSerializer(_fapiao_for(request, request_id)).data)


_RECORD_ERRORS = {
    "400": {
        "invalid_fapiao_number": "the number is not 8 or 20 digits, or the code not 10 or 12 (required with 8)",
        "unsupported_file_type": "the file is not a PDF, OFD or XML file",
    },
    "413": {"file_too_large": "the file is larger than FAPIAO_FILE_MAX_BYTES"},
    "409": {"fapiao_number_taken": "a fapiao with this code and number is recorded already"},
}


class _FapiaoRecordApi(APIView):
    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.OPERATOR)]
    parser_classes = [MultiPartParser]
    max_body_bytes = settings.FAPIAO_FILE_MAX_BYTES + 64 * 1024  # core.middleware.RequestLimitsMiddleware

    def _recorded(self, request: Request, request_id: Any, record: Callable[..., FapiaoRequest]) -> Response:
        found = _fapiao_for(request, request_id)
        body = FapiaoRecordSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        upload = fapiao.Upload(name=data["file"].name or "fapiao", content=data["file"].read())
        recorded = record(
            request_id=found.pk,
            number=data["number"],
            code=data["code"],
            issued_on=data["issued_on"],
            upload=upload,
            by=str(request.user),
        )
        return Response(FapiaoRequestSerializer(recorded).data)


class FapiaoIssueApi(_FapiaoRecordApi):
    """Operator: record the fapiao issued for a request (number, code, date, the file). Audited."""

    @extend_schema(
        request={"multipart/form-data": FapiaoRecordSerializer},
        responses=FapiaoRequestSerializer,
        summary="Record a fapiao issued",
        extensions={
            "x-error-codes": {
                **_RECORD_ERRORS,
                "409": {**_RECORD_ERRORS["409"], "fapiao_not_requested": "the request is not waiting to be issued"},
            }
        },
    )
    def post(self, request: Request, request_id: Any) -> Response:
        return self._recorded(request, request_id, fapiao.fapiao_issue)


class FapiaoRedLetterApi(_FapiaoRecordApi):
    """Operator: record the red-letter fapiao that reverses an issued one (needed before its invoice is voided)."""

    @extend_schema(
        request={"multipart/form-data": FapiaoRecordSerializer},
        responses=FapiaoRequestSerializer,
        summary="Record a red-letter reversal",
        extensions={
            "x-error-codes": {
                **_RECORD_ERRORS,
                "409": {**_RECORD_ERRORS["409"], "fapiao_not_issued": "the fapiao is not issued (or reversed already)"},
            }
        },
    )
    def post(self, request: Request, request_id: Any) -> Response:
        return self._recorded(request, request_id, fapiao.fapiao_reverse)


class FapiaoFileApi(APIView):
    """Buyer (its own) and operator: the fapiao's file, or with ``?red_letter=true`` its red-letter reversal's."""

    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]

    @extend_schema(
        parameters=[OpenApiParameter("red_letter", bool, description="The red-letter fapiao's file instead.")],
        responses={(200, content_type): OpenApiTypes.BINARY for content_type in fapiao.FILE_TYPES},
        summary="Download a fapiao file",
        extensions={"x-error-codes": {"404": {"not_found": "no such request, or no file recorded for it yet"}}},
    )
    def get(self, request: Request, request_id: Any) -> HttpResponse:
        found = _fapiao_for(request, request_id)
        red = request.query_params.get("red_letter", "false")
        if red not in ("true", "false"):
            raise ApplicationError(gettext("red_letter is true or false."), code="invalid_query")
        stored = found.red_file if red == "true" else found.file
        if stored is None:
            raise NotFoundError(gettext("No file is recorded for this fapiao yet."))
        return HttpResponse(
            bytes(stored.content),
            content_type=stored.content_type,
            headers={"Content-Disposition": f'attachment; filename="{stored.name}"'},
        )


class BankDepositListApi(ListAPIView):
    """Buyer: its compute-bank deposits, newest first: card-hours deposited, resold and earned."""

    serializer_class = BankDepositSerializer
    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]

    def get_queryset(self) -> QuerySet[CapacityDeposit]:
        if getattr(self, "swagger_fake_view", False):
            return CapacityDeposit.objects.none()
        return deposit_list(organization=organization_of(self.request))

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "earned": DepositEarnings()}


class BankDepositWithdrawApi(APIView):
    """Buyer: withdraw a deposit's hours not resold yet (from the next whole hour, or the end of the
    latest lease placed on it)."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER)]

    @extend_schema(
        request=None,
        responses=BankDepositSerializer,
        summary="Withdraw a deposit's unsold hours",
        extensions={"x-error-codes": {"409": {"deposit_withdrawn": "the deposit was withdrawn already"}}},
    )
    def post(self, request: Request, deposit_id: Any) -> Response:
        deposit = deposit_list(organization=organization_of(request)).filter(pk=deposit_id).first()
        if deposit is None:
            raise NotFoundError(gettext("No such deposit."))
        deposit = deposit_withdraw(deposit=deposit, by=str(request.user))
        return Response(BankDepositSerializer(deposit, context={"earned": DepositEarnings()}).data)
