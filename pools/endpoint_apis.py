"""Model endpoints: providers publish and reprice them, operators approve and suspend them."""

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.filters import StrictFilterSet
from organizations.permissions import IsOperator, IsProvider, KeyRoleAllows, organization_of
from pools import endpoints
from pools.apis import IsProviderOrOperator, actor
from pools.endpoint_serializers import EndpointCreateSerializer, EndpointRepriceSerializer, EndpointSerializer
from pools.models import ModelEndpoint
from pools.selectors import endpoint_list
from pools.serializers import PoolActionSerializer


class EndpointFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=ModelEndpoint.Status.choices)
    model = django_filters.CharFilter(help_text="Model name, e.g. deepseek-v3.")
    pool = django_filters.UUIDFilter(field_name="pool_id")

    class Meta:
        model = ModelEndpoint
        fields: list[str] = []


def _endpoint_for(request: Request, endpoint_id: Any, *, own: bool = False) -> ModelEndpoint:
    organization = organization_of(request)
    rows = endpoint_list(organization=organization)
    if own:
        rows = rows.filter(pool__provider=organization)
    endpoint = rows.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFoundError("No such endpoint among yours." if own else "No such endpoint.")
    return endpoint


def _response(endpoint: ModelEndpoint, status_code: int = status.HTTP_200_OK) -> Response:
    endpoint = ModelEndpoint.objects.select_related("pool__hub", "pool__provider").get(pk=endpoint.pk)
    return Response(EndpointSerializer(endpoint).data, status=status_code)


class EndpointListCreateApi(ListAPIView):
    """Providers publish and list their model endpoints; operators see every endpoint."""

    serializer_class = EndpointSerializer
    filterset_class = EndpointFilter

    def get_permissions(self) -> list[Any]:
        kind = IsProvider if self.request.method == "POST" else IsProviderOrOperator
        return [KeyRoleAllows(), kind()]

    def get_queryset(self) -> QuerySet[ModelEndpoint]:
        if getattr(self, "swagger_fake_view", False):
            return ModelEndpoint.objects.none()
        return endpoint_list(organization=organization_of(self.request)).order_by("created_at", "pk")

    @extend_schema(request=EndpointCreateSerializer, responses={201: EndpointSerializer}, summary="Publish a model")
    def post(self, request: Request) -> Response:
        body = EndpointCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        provider = organization_of(request)
        pool = provider.pools.filter(pk=data.pop("pool")).first()
        if pool is None:
            raise NotFoundError(
                gettext("No such pool among yours."),
                fields={"pool": [{"code": "not_found", "message": "Not your pool."}]},
            )
        endpoint = endpoints.endpoint_register(provider=provider, pool=pool, by=actor(request), **data)
        return _response(endpoint, status.HTTP_201_CREATED)


class EndpointDetailApi(APIView):
    def get_permissions(self) -> list[Any]:
        kind = IsProvider if self.request.method == "PATCH" else IsProviderOrOperator
        return [KeyRoleAllows(), kind()]

    @extend_schema(responses=EndpointSerializer)
    def get(self, request: Request, endpoint_id: Any) -> Response:
        return _response(_endpoint_for(request, endpoint_id))

    @extend_schema(
        request=EndpointRepriceSerializer, responses=EndpointSerializer, summary="New token prices (a price version)"
    )
    def patch(self, request: Request, endpoint_id: Any) -> Response:
        endpoint = _endpoint_for(request, endpoint_id, own=True)
        body = EndpointRepriceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoints.endpoint_reprice(endpoint=endpoint, by=actor(request), **body.validated_data)
        return _response(endpoint)


class _EndpointActionApi(APIView):
    action_service: Any = None
    own_only = False

    @extend_schema(request=PoolActionSerializer, responses=EndpointSerializer)
    def post(self, request: Request, endpoint_id: Any) -> Response:
        endpoint = _endpoint_for(request, endpoint_id, own=self.own_only)
        body = PoolActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = type(self).action_service(endpoint=endpoint, by=actor(request), reason=body.validated_data["reason"])
        return _response(endpoint)


class EndpointApproveApi(_EndpointActionApi):
    """Operator: admit a pending endpoint (its cards are reserved on the pool), or lift a suspension."""

    permission_classes = [KeyRoleAllows, IsOperator]
    action_service = endpoints.endpoint_approve


class EndpointSuspendApi(_EndpointActionApi):
    """Operator: take an endpoint out of the market; its cards go back to the pool."""

    permission_classes = [KeyRoleAllows, IsOperator]
    action_service = endpoints.endpoint_suspend


class EndpointRetireApi(_EndpointActionApi):
    """Provider: withdraw its own endpoint for good."""

    permission_classes = [KeyRoleAllows, IsProvider]
    action_service = endpoints.endpoint_retire
    own_only = True
