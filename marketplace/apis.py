from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView

from marketplace.filters import OfferFilter
from marketplace.selectors import offers_list
from marketplace.serializers import OfferSerializer
from organizations.models import Organization
from organizations.permissions import KeyRoleAllows, allow_kinds
from pools.models import ResourcePool
from pools.reference_data import USER_REGIONS


class OfferListApi(ListAPIView):
    """The compute supermarket: active, fresh pools with free cards, priced for now."""

    serializer_class = OfferSerializer
    filterset_class = OfferFilter
    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER, Organization.Kind.OPERATOR)]

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.now = timezone.now()

    def get_queryset(self) -> QuerySet[ResourcePool]:
        if getattr(self, "swagger_fake_view", False):
            return ResourcePool.objects.none()
        user_region = self.request.query_params.get("user_region")
        offers = offers_list(now=self.now, user_region=user_region if user_region in USER_REGIONS else None)
        return offers.order_by("price_now", "pk")  # type: ignore[misc]  # an annotation

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "now": getattr(self, "now", timezone.now())}

    @extend_schema(summary="Find offers")
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return super().get(request, *args, **kwargs)
