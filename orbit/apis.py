from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.idempotency import idempotent
from orbit import services
from orbit.models import Dataset
from orbit.selectors import dataset_list, satellite_contacts, satellite_list
from orbit.serializers import ContactListSerializer, ContactQuerySerializer, DatasetCreateSerializer, DatasetSerializer
from organizations.models import Organization
from organizations.permissions import IsProvider, KeyRoleAllows, allow_kinds, organization_of

IsParty = allow_kinds(Organization.Kind.BUYER, Organization.Kind.PROVIDER, Organization.Kind.OPERATOR)


class PoolContactsApi(APIView):
    """A satellite's passes over the ground stations, computed from its orbital elements."""

    permission_classes = [KeyRoleAllows, IsParty]

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Start of the window; now by default."),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="End; `from` plus a day by default, 7 at most."),
        ],
        responses=ContactListSerializer,
        summary="A satellite's contact windows with the ground stations",
    )
    def get(self, request: Request, pool_id: Any) -> Response:
        satellite = satellite_list(organization=organization_of(request)).filter(pool_id=pool_id).first()
        if satellite is None:
            raise NotFoundError(gettext("No such satellite: contacts exist for pools of the orbit hub you can see."))
        query = ContactQuerySerializer(data=request.query_params.dict(), context={"now": timezone.now()})
        query.is_valid(raise_exception=True)
        start, end = query.validated_data["start"], query.validated_data["end"]
        found = satellite_contacts(satellite=satellite, start=start, end=end)
        return Response(
            ContactListSerializer(
                {"pool": satellite.pool_id, "norad_id": satellite.norad_id, "from": start, "to": end, "contacts": found}
            ).data
        )


class DatasetListCreateApi(ListAPIView):
    serializer_class = DatasetSerializer

    def get_permissions(self) -> list[Any]:
        return [KeyRoleAllows(), (IsProvider if self.request.method == "POST" else IsParty)()]

    def get_queryset(self) -> QuerySet[Dataset]:
        if getattr(self, "swagger_fake_view", False):
            return Dataset.objects.none()
        return dataset_list(organization=organization_of(self.request))

    @extend_schema(
        request=DatasetCreateSerializer,
        responses={201: DatasetSerializer},
        summary="Register data a satellite holds",
        extensions={
            "x-error-codes": {
                "422": {
                    "unknown_satellite": "`satellite` is not the pool id of one of your orbit hub pools",
                    "over_storage": "larger than the satellite's storage",
                    "unknown_buyer": "no buyer has the `buyer` slug given",
                }
            }
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = DatasetCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        dataset = services.dataset_register(
            provider=organization_of(request),
            buyer_slug=data["buyer"],
            pool_id=data["satellite"],
            size_gb=data["size_gb"],
            captured_at=data["captured_at"],
            region=data["region"],
        )
        return Response(DatasetSerializer(dataset).data, status=201)


class DatasetDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsParty]

    @extend_schema(responses=DatasetSerializer)
    def get(self, request: Request, dataset_id: Any) -> Response:
        dataset = dataset_list(organization=organization_of(request)).filter(pk=dataset_id).first()
        if dataset is None:
            raise NotFoundError(gettext("No such dataset."))
        return Response(DatasetSerializer(dataset).data)
