from datetime import datetime
from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.idempotency import idempotent
from core.timezones import local_zone
from organizations.models import Organization
from organizations.permissions import IsOperator, IsProvider, KeyRoleAllows, allow_kinds, organization_of
from settlements.models import PayoutLine, PayoutRun, SubsidyClaim
from settlements.selectors import claim_csv, claim_evidence, claims_of, payout_runs, payouts_of
from settlements.serializers import (
    ClaimDetailSerializer,
    ClaimPaymentSerializer,
    ClaimReviewSerializer,
    ClaimSerializer,
    PayoutAccountSerializer,
    PayoutAccountSetSerializer,
    PayoutLineSerializer,
    PayoutLineSettleSerializer,
    PayoutRunCreateSerializer,
    PayoutRunSerializer,
    ReturnFileSerializer,
)
from settlements.services import accounts, claims, payouts

IsIssuerOrOperator = allow_kinds(Organization.Kind.ISSUER, Organization.Kind.OPERATOR)
CSV = {(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, documented in docs/payouts.md.")}


class PayoutAccountApi(APIView):
    """Provider: where it is paid, masked; a change waits PAYOUT_ACCOUNT_COOLING_OFF_HOURS and is audited."""

    permission_classes = [KeyRoleAllows, IsProvider]

    @extend_schema(responses=PayoutAccountSerializer, summary="The payout account")
    def get(self, request: Request) -> Response:
        provider, now = organization_of(request), timezone.now()
        data = {
            "current": accounts.payout_account_current(provider=provider, at=now),
            "pending": accounts.payout_account_pending(provider=provider, at=now),
        }
        return Response(PayoutAccountSerializer(data).data)

    @extend_schema(
        request=PayoutAccountSetSerializer,
        responses=PayoutAccountSerializer,
        summary="Register or change the payout account",
        extensions={"x-error-codes": {"422": {"account_name_mismatch": "the name is not the legal name"}}},
    )
    def put(self, request: Request) -> Response:
        body = PayoutAccountSetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        accounts.payout_account_set(provider=organization_of(request), by=str(request.user), **body.validated_data)
        return self.get(request)


def _run_for(request: Request, run_id: Any) -> PayoutRun:
    run = payout_runs(organization=organization_of(request)).filter(pk=run_id).first()
    if run is None:
        raise NotFoundError(gettext("No such payout run."))
    return run


def _run_data(request: Request, run_id: Any) -> dict[str, Any]:
    return PayoutRunSerializer(_run_for(request, run_id)).data


class PayoutRunListApi(ListAPIView):
    """Operator: payout runs, newest first; POST starts the run of a month."""

    serializer_class = PayoutRunSerializer
    permission_classes = [KeyRoleAllows, IsOperator]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return PayoutRun.objects.none()
        return payout_runs(organization=organization_of(self.request))

    @extend_schema(
        request=PayoutRunCreateSerializer,
        responses={201: PayoutRunSerializer},
        summary="Start a payout run",
        extensions={"x-error-codes": {"409": {"nothing_to_pay": "no provider is owed the minimum"}}},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = PayoutRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        year, month = (int(part) for part in body.validated_data["period"].split("-"))
        at = datetime(year, month, 1, 12, tzinfo=local_zone())
        run = payouts.payout_run_create(at=at, by=str(request.user))
        return Response(_run_data(request, run.pk), status=201)


class PayoutRunDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsOperator]

    @extend_schema(responses=PayoutRunSerializer, summary="A payout run")
    def get(self, request: Request, run_id: Any) -> Response:
        return Response(_run_data(request, run_id))


class PayoutBatchApi(APIView):
    """Operator: the bank batch CSV (docs/payouts.md); its SHA-256 in ``X-Checksum-SHA256``."""

    permission_classes = [KeyRoleAllows, IsOperator]

    @extend_schema(responses=CSV, summary="The bank batch CSV")
    def get(self, request: Request, run_id: Any) -> HttpResponse:
        run = _run_for(request, run_id)
        content = payouts.payout_batch_csv(run)
        return HttpResponse(
            content,
            content_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="payout-{run.pk}.csv"',
                "X-Checksum-SHA256": run.checksum,
            },
        )


class PayoutRunSendApi(APIView):
    permission_classes = [KeyRoleAllows, IsOperator]

    @extend_schema(
        request=None,
        responses=PayoutRunSerializer,
        summary="Mark a payout run sent",
        extensions={"x-error-codes": {"409": {"run_not_prepared": "the run was sent already"}}},
    )
    def post(self, request: Request, run_id: Any) -> Response:
        run = _run_for(request, run_id)
        payouts.payout_run_send(run_id=run.pk, by=str(request.user))
        return Response(_run_data(request, run_id))


class PayoutLineSettleApi(APIView):
    permission_classes = [KeyRoleAllows, IsOperator]

    @extend_schema(
        request=PayoutLineSettleSerializer,
        responses=PayoutRunSerializer,
        summary="Settle a payout line: paid, or failed with the bank's reason",
        extensions={"x-error-codes": {"409": {"line_not_sent": "the line is not sent, or settled already"}}},
    )
    def post(self, request: Request, run_id: Any, line_id: Any) -> Response:
        body = PayoutLineSettleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = _run_for(request, run_id)
        payouts.payout_line_settle(
            run_id=run.pk,
            line_id=line_id,
            paid=body.validated_data["status"] == "paid",
            reason=body.validated_data["reason"],
            by=str(request.user),
        )
        return Response(_run_data(request, run_id))


class PayoutReturnFileApi(APIView):
    permission_classes = [KeyRoleAllows, IsOperator]

    @extend_schema(
        request=ReturnFileSerializer,
        responses=PayoutRunSerializer,
        summary="Apply the bank's return file",
        extensions={"x-error-codes": {"422": {"invalid_return_file": "a row the layout does not allow"}}},
    )
    def post(self, request: Request, run_id: Any) -> Response:
        body = ReturnFileSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = _run_for(request, run_id)
        payouts.payout_return_file_apply(run_id=run.pk, content=body.validated_data["content"], by=str(request.user))
        return Response(_run_data(request, run_id))


class PayoutListApi(ListAPIView):
    """Provider: its payouts, each with the invoices' shares and statements it settles."""

    serializer_class = PayoutLineSerializer
    permission_classes = [KeyRoleAllows, IsProvider]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return PayoutLine.objects.none()
        return payouts_of(provider=organization_of(self.request))


# --- subsidy claims -----------------------------------------------------------


def _claim_for(request: Request, claim_id: Any) -> SubsidyClaim:
    claim = claims_of(organization=organization_of(request), now=timezone.now()).filter(pk=claim_id).first()
    if claim is None:
        raise NotFoundError(gettext("No such claim."))
    return claim


def _claim_data(request: Request, claim_id: Any) -> dict[str, Any]:
    claim = _claim_for(request, claim_id)
    claim.evidence = claim_evidence(claim)  # type: ignore[attr-defined]
    return ClaimDetailSerializer(claim).data


class ClaimListApi(ListAPIView):
    """Issuer: the platform's claims on its programs; operator: all. Overdue: reviewed, not paid by ``due_at``."""

    serializer_class = ClaimSerializer
    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]
    filterset_fields = ["status"]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return SubsidyClaim.objects.none()
        return claims_of(organization=organization_of(self.request), now=timezone.now())


class ClaimDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(responses=ClaimDetailSerializer, summary="A claim with its evidence lines")
    def get(self, request: Request, claim_id: Any) -> Response:
        return Response(_claim_data(request, claim_id))


class ClaimCsvApi(APIView):
    permission_classes = [KeyRoleAllows, IsIssuerOrOperator]

    @extend_schema(responses=CSV, summary="A claim as CSV, for an auditor")
    def get(self, request: Request, claim_id: Any) -> HttpResponse:
        claim = _claim_for(request, claim_id)
        return HttpResponse(
            claim_csv(claim, claim_evidence(claim)),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{claim.number}.csv"'},
        )


class ClaimReviewApi(APIView):
    """Issuer: approve every line, or reject some with a reason code (the rest approved). Once."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.ISSUER)]

    @extend_schema(
        request=ClaimReviewSerializer,
        responses=ClaimDetailSerializer,
        summary="Review a claim",
        extensions={
            "x-error-codes": {
                "409": {"claim_already_reviewed": "a claim is reviewed once"},
                "422": {"unknown_line": "a rejected line is not on this claim"},
            }
        },
    )
    def post(self, request: Request, claim_id: Any) -> Response:
        body = ClaimReviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        claim = _claim_for(request, claim_id)
        claims.claim_review(
            claim_id=claim.pk,
            approve_all=body.validated_data["approve_all"],
            rejections=body.validated_data["reject"],
            by=str(request.user),
        )
        return Response(_claim_data(request, claim_id))


class ClaimPaymentApi(APIView):
    """Operator: record the issuer's bank transfer against a reviewed claim (partial payments add up)."""

    permission_classes = [KeyRoleAllows, IsOperator]

    @extend_schema(
        request=ClaimPaymentSerializer,
        responses=ClaimDetailSerializer,
        summary="Record an issuer's payment",
        extensions={
            "x-error-codes": {
                "409": {
                    "claim_not_reviewed": "the issuer has not reviewed the claim",
                    "payment_recorded": "this reference is recorded on the claim",
                },
                "422": {"overpayment": "more than the claim's approved amount still due"},
            }
        },
    )
    @idempotent
    def post(self, request: Request, claim_id: Any) -> Response:
        body = ClaimPaymentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        claim = _claim_for(request, claim_id)
        claims.claim_payment_record(claim_id=claim.pk, by=str(request.user), **body.validated_data)
        return Response(_claim_data(request, claim_id))
