from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import ApplicationError, NotFoundError
from core.filters import StrictFilterSet, refuse_unknown_parameters
from core.idempotency import idempotent
from organizations.models import Organization
from organizations.permissions import KeyRoleAllows, allow_kinds, organization_of
from vouchers import services
from vouchers.models import Voucher, VoucherProgram
from vouchers.report_csv import report_csv
from vouchers.selectors import program_list, program_report, redemption_trail, voucher_list
from vouchers.serializers import (
    ProgramCreateSerializer,
    ProgramReportSerializer,
    ProgramSerializer,
    RevokeSerializer,
    VoucherRequestSerializer,
    VoucherSerializer,
    parse_voucher_rows,
)

Kind = Organization.Kind


class VoucherFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=Voucher.Status.choices)
    program = django_filters.UUIDFilter(field_name="program_id", help_text="A program's id.")

    class Meta:
        model = Voucher
        fields: list[str] = []


IsIssuerOrOperator = allow_kinds(Kind.ISSUER, Kind.OPERATOR)
IsVoucherParty = allow_kinds(Kind.BUYER, Kind.ISSUER, Kind.OPERATOR)


def _program_for(request: Request, program_id: Any) -> VoucherProgram:
    """A program the caller runs (issuer) or oversees (operator); another issuer's answers 404."""
    program = program_list(organization=organization_of(request)).filter(pk=program_id).first()
    if program is None:
        raise NotFoundError(gettext("No such voucher program."))
    return program


def _voucher_for(request: Request, voucher_id: Any) -> Voucher:
    voucher = voucher_list(organization=organization_of(request)).filter(pk=voucher_id).first()
    if voucher is None:
        raise NotFoundError(gettext("No such voucher."))
    return voucher


def _program_response(program: VoucherProgram, status_code: int = status.HTTP_200_OK) -> Response:
    program = program_list(organization=program.issuer).get(pk=program.pk)
    return Response(ProgramSerializer(program).data, status=status_code)


class ProgramListCreateApi(ListAPIView):
    """Issuers run compute-voucher programs; operators see every program and may create one for an issuer."""

    serializer_class = ProgramSerializer
    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[VoucherProgram]:
        if getattr(self, "swagger_fake_view", False):
            return VoucherProgram.objects.none()
        return program_list(organization=organization_of(self.request)).order_by("-created_at", "pk")

    @extend_schema(
        request=ProgramCreateSerializer,
        responses={201: ProgramSerializer},
        summary="Create a voucher program (as a draft)",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = ProgramCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        caller = organization_of(request)
        issuer = data.pop("issuer", None)
        if caller.kind == Kind.OPERATOR and issuer is None:
            raise ApplicationError(
                gettext("An operator names the issuer the program is for."),
                code="issuer_required",
                fields={"issuer": [{"code": "required", "message": "Required for operators."}]},
            )
        if caller.kind == Kind.ISSUER and issuer not in (None, caller):
            raise ApplicationError(
                gettext("An issuer creates programs for itself only."),
                code="not_your_issuer",
                fields={"issuer": [{"code": "not_yours", "message": "Leave it out, or name yourself."}]},
            )
        program = services.program_create(issuer=issuer or caller, by=str(request.user), **data)
        return _program_response(program, status.HTTP_201_CREATED)


class ProgramDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(responses=ProgramSerializer, summary="A voucher program")
    def get(self, request: Request, program_id: Any) -> Response:
        return Response(ProgramSerializer(_program_for(request, program_id)).data)


class ProgramOpenApi(APIView):
    """Open a draft program: from now on it grants vouchers."""

    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(request=None, responses=ProgramSerializer, summary="Open a voucher program")
    def post(self, request: Request, program_id: Any) -> Response:
        program = services.program_open(program=_program_for(request, program_id), by=str(request.user))
        return _program_response(program)


class ProgramCloseApi(APIView):
    """Close a program: it grants no more vouchers; those granted pay until they expire or are revoked."""

    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(request=None, responses=ProgramSerializer, summary="Close a voucher program")
    def post(self, request: Request, program_id: Any) -> Response:
        program = services.program_close(program=_program_for(request, program_id), by=str(request.user))
        return _program_response(program)


class CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        return data  # the view streams the CSV itself


class ProgramReportApi(APIView):
    """The program's audit: budget, granted, redeemed, expired and left; spend by company,
    provider, hub and month of usage. As CSV (`?format=csv` or `Accept: text/csv`) it also
    lists every redemption with the invoice line, lease and usage it paid for."""

    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]
    renderer_classes = [JSONRenderer, CsvRenderer]

    @extend_schema(
        responses={
            (200, "application/json"): ProgramReportSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The report and every redemption."),
        },
        summary="A voucher program's report",
    )
    def get(self, request: Request, program_id: Any) -> Any:
        refuse_unknown_parameters(request, {"format"})
        if request.query_params.get("format") == "":  # DRF would take it as no format asked
            raise ApplicationError(gettext("format is csv or json; leave it out for json."), code="invalid_format")
        program = _program_for(request, program_id)
        report = program_report(program=program)
        if request.accepted_renderer.format == "csv":
            trail = redemption_trail(program=program).iterator(chunk_size=2000)
            return StreamingHttpResponse(
                report_csv(report, trail),
                content_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="voucher-program-{program.pk}.csv"'},
            )
        return Response(ProgramReportSerializer(report).data)

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are JSON whatever format was asked for.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return super().handle_exception(exc)


class ProgramVouchersApi(APIView):
    """Grant vouchers of a program: one voucher object, or a list of them, all or none.

    A list with bad rows issues nothing and answers 400 with each bad row, by its index,
    in `fields`; vouchers beyond the budget left are a 422 `budget_exceeded`.
    """

    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(
        request=VoucherRequestSerializer(many=True),
        responses={201: VoucherSerializer(many=True)},
        summary="Issue vouchers (one object or a list)",
    )
    @idempotent
    def post(self, request: Request, program_id: Any) -> Response:
        program = _program_for(request, program_id)
        many = isinstance(request.data, list)
        rows: list[Any] = request.data if isinstance(request.data, list) else [request.data]
        now = timezone.now()
        requests = parse_voucher_rows(program=program, rows=rows, now=now)
        vouchers = services.vouchers_issue(program=program, requests=requests, by=str(request.user), now=now)
        issued = voucher_list(organization=program.issuer).in_bulk([voucher.pk for voucher in vouchers])
        data = VoucherSerializer([issued[voucher.pk] for voucher in vouchers], many=True).data  # in request order
        return Response(data if many else data[0], status=status.HTTP_201_CREATED)


class VoucherListApi(ListAPIView):
    """Buyers: their vouchers, remaining value and redemptions. Issuers: the vouchers they granted."""

    serializer_class = VoucherSerializer
    permission_classes = [KeyRoleAllows, IsVoucherParty]
    filterset_class = VoucherFilter

    def get_queryset(self) -> QuerySet[Voucher]:
        if getattr(self, "swagger_fake_view", False):
            return Voucher.objects.none()
        return voucher_list(organization=organization_of(self.request)).order_by("valid_until", "created_at", "pk")


class VoucherDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsVoucherParty]

    @extend_schema(responses=VoucherSerializer, summary="A voucher and each redemption")
    def get(self, request: Request, voucher_id: Any) -> Response:
        return Response(VoucherSerializer(_voucher_for(request, voucher_id)).data)


class VoucherRevokeApi(APIView):
    """The issuer withdraws a voucher: it pays nothing more; what is left goes back to the budget."""

    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(request=RevokeSerializer, responses=VoucherSerializer, summary="Revoke a voucher")
    def post(self, request: Request, voucher_id: Any) -> Response:
        voucher = _voucher_for(request, voucher_id)
        body = RevokeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.voucher_revoke(voucher=voucher, by=str(request.user), reason=body.validated_data["reason"])
        return Response(VoucherSerializer(_voucher_for(request, voucher.pk)).data)
