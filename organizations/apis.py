from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.filters import StrictFilterSet, UtcIsoDateTimeFilter
from organizations.models import ApiKey, AuditEvent, InvoicingDetails
from organizations.permissions import IsBuyer, IsOperator, KeyRoleAllows, organization_of, scoped
from organizations.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    AuditEventSerializer,
    InvoicingDetailsSerializer,
    OrganizationSerializer,
)
from organizations.services import api_key_create, api_key_revoke, invoicing_details_set


class OrganizationMeApi(APIView):
    @extend_schema(responses=OrganizationSerializer, summary="The organization of the calling key")
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(organization_of(request)).data)


class ApiKeyListCreateApi(ListAPIView):
    """Your organization's API keys. Creating and revoking needs an admin key."""

    serializer_class = ApiKeySerializer
    permission_classes = [KeyRoleAllows]

    @property
    def admin_key_only(self) -> bool:
        return self.request.method == "POST"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):
            return ApiKey.objects.none()
        return scoped(ApiKey.objects.all(), self.request)

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
        summary="Create an API key; the key is shown once",
    )
    def post(self, request: Request) -> Response:
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, raw_key = api_key_create(
            organization=organization_of(request),
            created_by=f"api-key:{request.user.api_key.prefix}",  # type: ignore[union-attr]
            **serializer.validated_data,
        )
        api_key.key = raw_key  # type: ignore[attr-defined]
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    admin_key_only = True

    @extend_schema(responses={204: None}, summary="Revoke an API key")
    def delete(self, request: Request, key_id: str) -> Response:
        api_key_revoke(organization=organization_of(request), key_id=key_id, by=str(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventFilter(StrictFilterSet):
    action = django_filters.ChoiceFilter(choices=AuditEvent.Action.choices, help_text="e.g. pool.approve")
    organization = django_filters.UUIDFilter(
        method="filter_organization", help_text="An organization's id: events on its objects or by its keys."
    )
    target_type = django_filters.CharFilter(help_text="e.g. resourcepool, voucherprogram, voucher, invoice, apikey")
    target_id = django_filters.CharFilter()
    occurred_after = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_organization(self, queryset: QuerySet[AuditEvent], name: str, value: Any) -> QuerySet[AuditEvent]:
        return queryset.filter(Q(organization_id=value) | Q(actor_organization_id=value))


class AuditEventListApi(ListAPIView):
    """Operators: the append-only audit trail of operator, issuer and key-management actions, newest first."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    permission_classes = [KeyRoleAllows, IsOperator]
    filterset_class = AuditEventFilter


class InvoicingDetailsApi(APIView):
    """Buyer: what its fapiao carry (title, taxpayer id; address, phone, bank for special ones). Audited."""

    permission_classes = [KeyRoleAllows, IsBuyer]

    @extend_schema(
        responses=InvoicingDetailsSerializer,
        summary="The invoicing details",
        extensions={"x-error-codes": {"404": {"not_found": "no invoicing details kept yet; PUT them"}}},
    )
    def get(self, request: Request) -> Response:
        details = InvoicingDetails.objects.filter(organization=organization_of(request)).first()
        if details is None:
            raise NotFoundError(_("No invoicing details yet: PUT them first."))
        return Response(InvoicingDetailsSerializer(details).data)

    @extend_schema(
        request=InvoicingDetailsSerializer,
        responses=InvoicingDetailsSerializer,
        summary="Keep the invoicing details",
    )
    def put(self, request: Request) -> Response:
        body = InvoicingDetailsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        details = invoicing_details_set(
            organization=organization_of(request), by=str(request.user), **body.validated_data
        )
        return Response(InvoicingDetailsSerializer(details).data)
