from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.filters import StrictFilterSet
from organizations.models import Organization
from organizations.permissions import IsOperator, IsProvider, KeyRoleAllows, allow_kinds, organization_of
from pools import services
from pools.models import GpuModel, Hub, ResourcePool
from pools.selectors import pool_list, price_plans_in_force
from pools.serializers import (
    DryRunSerializer,
    GpuModelSerializer,
    HeartbeatSerializer,
    HubSerializer,
    PoolActionSerializer,
    PoolCreateSerializer,
    PoolSerializer,
    PoolUpdateSerializer,
    PriceChangeResultSerializer,
    PriceChangeSerializer,
    PricePlanSerializer,
)

IsProviderOrOperator = allow_kinds(Organization.Kind.PROVIDER, Organization.Kind.OPERATOR)


class PoolFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=ResourcePool.Status.choices)
    hub = django_filters.CharFilter(field_name="hub_id", help_text="Hub code, e.g. ningxia.")
    gpu_model = django_filters.CharFilter(field_name="gpu_model_id", help_text="GPU model code, e.g. H100-80G.")

    class Meta:
        model = ResourcePool
        fields: list[str] = []


def actor(request: Request) -> str:
    """Who did it, for status history: the organization and the key prefix."""
    return str(request.user)


class HubListApi(ListAPIView):
    """The 8 national hubs: region, electricity tariff, PUE, green share, latency to user regions."""

    queryset = Hub.objects.all()
    serializer_class = HubSerializer
    permission_classes = [AllowAny]
    authentication_classes: list[type] = []
    filterset_fields = ["region"]


class GpuModelListApi(ListAPIView):
    """The GPU model catalog."""

    queryset = GpuModel.objects.all()
    serializer_class = GpuModelSerializer
    permission_classes = [AllowAny]
    authentication_classes: list[type] = []
    filterset_fields = ["vendor"]


def _pool_for(request: Request, pool_id: Any) -> ResourcePool:
    """A pool the caller may see: its own (provider) or any (operator); else 404."""
    pool = pool_list(organization=organization_of(request)).filter(pk=pool_id).first()
    if pool is None:
        raise NotFoundError(gettext("No such pool."))
    return pool


def _own_pool(request: Request, pool_id: Any) -> ResourcePool:
    """A pool of the calling provider; another provider's answers 404."""
    pool = (
        pool_list(organization=organization_of(request)).filter(pk=pool_id, provider=organization_of(request)).first()
    )
    if pool is None:
        raise NotFoundError(gettext("No such pool among yours."))
    return pool


def _pool_response(pool: ResourcePool, status_code: int = status.HTTP_200_OK) -> Response:
    pool = ResourcePool.objects.select_related("provider", "hub", "gpu_model").get(pk=pool.pk)
    return Response(PoolSerializer(pool).data, status=status_code)


class PoolListCreateApi(ListAPIView):
    """Providers list and register their pools; operators see every pool."""

    serializer_class = PoolSerializer
    filterset_class = PoolFilter

    def get_permissions(self) -> list[Any]:
        kind = IsProvider if self.request.method == "POST" else IsProviderOrOperator
        return [KeyRoleAllows(), kind()]

    def get_queryset(self) -> QuerySet[ResourcePool]:
        if getattr(self, "swagger_fake_view", False):
            return ResourcePool.objects.none()
        return pool_list(organization=organization_of(self.request)).order_by("created_at", "pk")

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], list):
            kwargs.setdefault("context", self.get_serializer_context())
            kwargs["context"]["plans"] = price_plans_in_force(pool_ids=[p.pk for p in args[0]], at=timezone.now())
        return super().get_serializer(*args, **kwargs)

    @extend_schema(request=PoolCreateSerializer, responses={201: PoolSerializer}, summary="Register a pool")
    def post(self, request: Request) -> Response:
        body = PoolCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pool = services.pool_register(
            provider=organization_of(request), hub_id=data.pop("hub").code, by=actor(request), **data
        )
        return _pool_response(pool, status.HTTP_201_CREATED)


class PoolDetailApi(APIView):
    def get_permissions(self) -> list[Any]:
        kind = IsProvider if self.request.method == "PATCH" else IsProviderOrOperator
        return [KeyRoleAllows(), kind()]

    @extend_schema(responses=PoolSerializer)
    def get(self, request: Request, pool_id: Any) -> Response:
        return _pool_response(_pool_for(request, pool_id))

    @extend_schema(
        request=PoolUpdateSerializer,
        responses=PoolSerializer,
        summary="Change a pool; price fields create a new price version",
    )
    def patch(self, request: Request, pool_id: Any) -> Response:
        pool = _own_pool(request, pool_id)
        body = PoolUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pool = services.pool_edit(pool=pool, by=actor(request), **body.validated_data)
        return _pool_response(pool)


class _PoolActionApi(APIView):
    """An operator's or provider's action on one pool's status."""

    action_service: Any = None
    own_pools_only = False

    @extend_schema(request=PoolActionSerializer, responses=PoolSerializer)
    def post(self, request: Request, pool_id: Any) -> Response:
        pool = _own_pool(request, pool_id) if self.own_pools_only else _pool_for(request, pool_id)
        body = PoolActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pool = type(self).action_service(pool=pool, by=actor(request), reason=body.validated_data["reason"])
        return _pool_response(pool)


class PoolApproveApi(_PoolActionApi):
    """Operator: admit a pending pool to the market, or lift a suspension."""

    permission_classes = [KeyRoleAllows, IsOperator]
    action_service = services.pool_approve


class PoolSuspendApi(_PoolActionApi):
    """Operator: take a pool out of the market."""

    permission_classes = [KeyRoleAllows, IsOperator]
    action_service = services.pool_suspend


class PoolRetireApi(_PoolActionApi):
    """Provider: withdraw its own pool for good, once no lease holds its cards."""

    permission_classes = [KeyRoleAllows, IsProvider]
    action_service = services.pool_retire
    own_pools_only = True


class PoolHeartbeatApi(APIView):
    """Provider agent: how many cards are healthy, as observed at a time."""

    permission_classes = [KeyRoleAllows, IsProvider]

    @extend_schema(request=HeartbeatSerializer, responses=PoolSerializer)
    def post(self, request: Request, pool_id: Any) -> Response:
        pool = _own_pool(request, pool_id)
        body = HeartbeatSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pool = services.pool_heartbeat(pool=pool, **body.validated_data)
        return _pool_response(pool)


class PoolPriceListApi(APIView):
    """Every price version of a pool, newest first; a provider makes a new one (or tries it first)."""

    def get_permissions(self) -> list[Any]:
        kind = IsProvider if self.request.method == "POST" else IsProviderOrOperator
        return [KeyRoleAllows(), kind()]

    @extend_schema(
        request=PriceChangeSerializer,
        responses={200: PriceChangeResultSerializer, 201: PriceChangeResultSerializer},
        parameters=[DryRunSerializer],
        summary="Make a new price version, or with dry_run=true see the leases it would reach",
    )
    def post(self, request: Request, pool_id: Any) -> Response:
        pool = _own_pool(request, pool_id)
        query = DryRunSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        body = PriceChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        dry_run = query.validated_data["dry_run"]
        plan, affected = services.price_plan_publish(
            pool=pool, by=actor(request), dry_run=dry_run, **body.validated_data
        )
        result = PriceChangeResultSerializer({"dry_run": dry_run, "version": plan, "affected_leases": affected})
        return Response(result.data, status=status.HTTP_200_OK if dry_run else status.HTTP_201_CREATED)

    @extend_schema(responses=PricePlanSerializer(many=True))
    def get(self, request: Request, pool_id: Any) -> Response:
        pool = _pool_for(request, pool_id)
        return Response(PricePlanSerializer(pool.price_plans.order_by("-version"), many=True).data)
