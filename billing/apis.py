from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.cloudevents import MAX_BYTES, events_from_request
from billing.models import BankMovement, Invoice, ProviderStatement, TopUp
from billing.schema import BINARY_HEADERS
from billing.selectors import bank_movements, bank_summary, invoice_list, invoice_view, statement_list, usage_series
from billing.serializers import (
    BankDepositSerializer,
    BankMovementSerializer,
    BankSerializer,
    BankSettingsSerializer,
    BankTransferSerializer,
    DepositEarnings,
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
from billing.services import invoices, payments
from billing.services.bank.grants import bank_settings_set
from billing.services.bank.top_ups import top_up_client_secret, top_up_create
from billing.services.usage import usage_events_ingest
from core.exceptions import NotFoundError
from core.idempotency import idempotent
from marketplace.deposits import deposit_list, deposit_withdraw
from marketplace.models import CapacityDeposit
from organizations.models import Organization
from organizations.permissions import IsProvider, KeyRoleAllows, allow_kinds, organization_of


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
        raise NotFoundError("No such invoice.")
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
        return invoice_list(organization=organization_of(self.request)).prefetch_related("lines")

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
            raise NotFoundError("No such top-up.")
        return Response(TopUpSerializer(top_up).data)


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
            raise NotFoundError("No such deposit.")
        deposit = deposit_withdraw(deposit=deposit, by=str(request.user))
        return Response(BankDepositSerializer(deposit, context={"earned": DepositEarnings()}).data)
