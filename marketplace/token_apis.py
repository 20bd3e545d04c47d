"""The token market's API: token offers, token quotes, token orders."""

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

from core.exceptions import ApplicationError, NotFoundError
from core.filters import refuse_unknown_parameters
from core.idempotency import idempotent
from marketplace import token_services
from marketplace.apis import IsBuyerOrOperator
from marketplace.models import Order
from marketplace.selectors import order_list
from marketplace.token_selectors import token_offers, token_quote_voucher_credits
from marketplace.token_serializers import (
    TokenOfferSerializer,
    TokenOrderSerializer,
    TokenQuoteResponseSerializer,
    TokenRequestSerializer,
    render_token_quote,
)
from organizations.permissions import IsBuyer, KeyRoleAllows, organization_of
from pools.reference_data import USER_REGIONS

ORDERINGS = ("price", "latency")


class TokenOfferListApi(ListAPIView):
    """Model endpoints selling tokens now: prices of this local hour, throughput, electricity per million tokens."""

    serializer_class = TokenOfferSerializer
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]
    filter_backends: list[type] = []  # the parameters are checked here: offers are not a queryset

    @extend_schema(
        summary="Find token offers",
        parameters=[
            OpenApiParameter("model", OpenApiTypes.STR, description="e.g. deepseek-v3"),
            OpenApiParameter("user_region", OpenApiTypes.STR, enum=sorted(USER_REGIONS)),
            OpenApiParameter("ordering", OpenApiTypes.STR, enum=ORDERINGS, description="price (default) or latency"),
        ],
    )
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        params = self.request.query_params
        paginator = self.paginator
        assert paginator is not None
        refuse_unknown_parameters(
            self.request,
            {"model", "user_region", "ordering", paginator.page_query_param, paginator.page_size_query_param},  # type: ignore[attr-defined]
        )
        region, ordering = params.get("user_region"), params.get("ordering", "price")
        if (region is not None and region not in USER_REGIONS) or ordering not in ORDERINGS:
            raise ApplicationError(
                gettext("user_region is one of %(join)s; ordering is price or latency.")
                % {"join": ", ".join(sorted(USER_REGIONS))},
                code="invalid_filter",
            )
        if ordering == "latency" and region is None:
            raise ApplicationError(gettext("Ordering by latency needs a user_region."), code="invalid_filter")
        return token_offers(now=timezone.now(), model=params.get("model"), user_region=region, ordering=ordering)


class TokenQuoteApi(APIView):
    """Rank the endpoints for token work, with the reason each other endpoint was turned down, and the cost
    of each after the buyer's vouchers. Nothing is reserved."""

    permission_classes = [KeyRoleAllows, IsBuyer]

    @extend_schema(request=TokenRequestSerializer, responses=TokenQuoteResponseSerializer, summary="Get a token quote")
    def post(self, request: Request) -> Response:
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token_request = body.token_request()
        now = timezone.now()
        result = token_services.token_quote(
            request=token_request, endpoint_id=body.validated_data.get("endpoint"), now=now
        )
        credits = token_quote_voucher_credits(
            buyer=organization_of(request), result=result, request=token_request, now=now
        )
        return Response(render_token_quote(result, token_request, voucher_credits=credits))


def _token_orders(request: Request) -> QuerySet[Order]:
    return (
        order_list(organization=organization_of(request))
        .filter(endpoint__isnull=False)
        .select_related("endpoint")
        .prefetch_related("leases")
    )


class TokenOrderListCreateApi(ListAPIView):
    serializer_class = TokenOrderSerializer

    def get_permissions(self) -> list[Any]:
        return [KeyRoleAllows(), (IsBuyer if self.request.method == "POST" else IsBuyerOrOperator)()]

    def get_queryset(self) -> QuerySet[Order]:
        if getattr(self, "swagger_fake_view", False):
            return Order.objects.none()
        return _token_orders(self.request)

    @extend_schema(
        request=TokenRequestSerializer,
        responses={201: TokenOrderSerializer},
        summary="Open a token account (real-time) or a batch token job on the best endpoint or the chosen one",
        extensions={
            "x-error-codes": {
                "422": {
                    "no_capacity": "no endpoint can take the order now; `reasons` counts them by reason",
                    "endpoint_rejected": "the chosen `endpoint` cannot take it; `reasons` says why",
                    "orders_blocked": "an unpaid invoice blocks new orders until it is paid",
                }
            }
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        order = token_services.token_order_place(
            buyer=organization_of(request),
            request=body.token_request(),
            endpoint_id=body.validated_data.get("endpoint"),
            by=str(request.user),
        )
        return Response(TokenOrderSerializer(_token_orders(request).get(pk=order.pk)).data, status=201)


class TokenOrderDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]

    @extend_schema(responses=TokenOrderSerializer)
    def get(self, request: Request, token_order_id: Any) -> Response:
        order = _token_orders(request).filter(pk=token_order_id).first()
        if order is None:
            raise NotFoundError(gettext("No such token order."))
        return Response(TokenOrderSerializer(order).data)
