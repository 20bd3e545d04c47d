from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework.fields import DateTimeField
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.filters import StrictFilterBackend
from core.idempotency import idempotent
from marketplace import orbit, services
from marketplace.capacity import bank_capacity
from marketplace.deposits import deposit_create
from marketplace.dispatch import Requirements
from marketplace.filters import LeaseFilter, OfferFilter
from marketplace.models import FeedEvent, Lease, Order
from marketplace.offers import offer_to_dict, offers_filtered, offers_now
from marketplace.selectors import (
    lease_list,
    offers_list,
    order_list,
    price_index,
    quote_voucher_credits,
    reserved_discounts,
)
from marketplace.serializers import (
    DepositRequestSerializer,
    DepositSerializer,
    FeedEventSerializer,
    LeaseSerializer,
    LeaseUpdateSerializer,
    OfferSerializer,
    OrbitQuoteSerializer,
    OrbitRequestSerializer,
    OrderRequestSerializer,
    OrderSerializer,
    PriceIndexQuerySerializer,
    PriceIndexSerializer,
    QuoteResponseSerializer,
    QuoteSerializer,
    order_data,
)
from organizations.models import Organization
from organizations.permissions import IsBuyer, IsProvider, KeyRoleAllows, allow_kinds, organization_of
from pools.models import ResourcePool
from pools.reference_data import USER_REGIONS


def _forget_data(response: Response) -> None:
    response.data = None


# Offer queries already checked (cleaned filters, ordering), by their parameters.
_CHECKED_OFFER_QUERIES: dict[tuple[Any, ...], tuple[dict[str, Any], list[str]]] = {}
MAX_CHECKED_OFFER_QUERIES = 1024


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
        self.bank = bank_capacity(now=self.now)
        offers = offers_list(
            now=self.now, user_region=user_region if user_region in USER_REGIONS else None, also_pools=list(self.bank)
        )
        return offers.order_by("price_now", "pk")  # type: ignore[misc]  # an annotation

    def get_serializer_context(self) -> dict[str, Any]:
        return {
            **super().get_serializer_context(),
            "now": getattr(self, "now", timezone.now()),
            "bank_capacity": getattr(self, "bank", {}),
        }

    def _checked_query(self, request: Any) -> tuple[dict[str, Any], list[str]]:
        """The filters' cleaned values and the ordering keys, or the 400 the filter backend gives.
        Checking depends on the parameters alone, so a query checked once is remembered: a
        filterset deep-copies its filters and form fields, the larger part of its cost."""
        key = tuple(sorted((name, tuple(values)) for name, values in request.query_params.lists()))
        checked = _CHECKED_OFFER_QUERIES.get(key)
        if checked is None:
            filterset = StrictFilterBackend().valid_filterset(request, ResourcePool.objects.none(), self)
            checked = (dict(filterset.form.cleaned_data), filterset.check_ordering())
            if len(_CHECKED_OFFER_QUERIES) >= MAX_CHECKED_OFFER_QUERIES:
                _CHECKED_OFFER_QUERIES.clear()
            _CHECKED_OFFER_QUERIES[key] = checked
        return checked

    @extend_schema(summary="Find offers")
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # From the per-pool snapshot as plain dicts (marketplace.offers); the filterset only checks
        # the parameters, and OfferSerializer describes the response in the schema.
        cleaned, ordering = self._checked_query(request)
        user_region = cleaned.get("user_region") or None
        # Deposited cards are worked out per request: they come and go with their deposits' hours.
        bank = bank_capacity(now=self.now)
        offers = offers_filtered(
            offers_now(now=self.now, user_region=user_region, bank=bank), filters=cleaned, ordering=ordering
        )
        page = self.paginate_queryset(offers) or []  # type: ignore[arg-type]  # a list pages as a queryset does
        response = self.get_paginated_response([offer_to_dict(offer, now=self.now, bank=bank) for offer in page])
        # The view and its request refer to each other, and the paginator's page holds every offer:
        # let go of them so that they are freed now, not by the cyclic collector (docs/benchmarks.md).
        self.paginator.page.object_list = self.paginator.page.paginator.object_list = ()  # type: ignore[union-attr]
        response.add_post_render_callback(_forget_data)  # the response and its view refer to each other too
        return response


_POOL_NOT_OFFERED = "no pool in the market has the `pool` id given (unknown, pending, suspended or retired alike)"

IsBuyerOrOperator = allow_kinds(Organization.Kind.BUYER, Organization.Kind.OPERATOR)
IsParty = allow_kinds(Organization.Kind.BUYER, Organization.Kind.PROVIDER, Organization.Kind.OPERATOR)


def _orbit_body(request: Request) -> dict[str, Any] | None:
    """The checked body of an in-orbit order or quote (one that names a ``dataset``), else None."""
    if not (isinstance(request.data, dict) and "dataset" in request.data):
        return None
    body = OrbitRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


_ORDER_BODY = PolymorphicProxySerializer(
    component_name="OrderOrOrbitRequest",
    serializers=[OrderRequestSerializer, OrbitRequestSerializer],
    resource_type_field_name=None,
)
_ORBIT_CODES = {
    "unknown_dataset": "none of the buyer's datasets has the `dataset` id given",
    "deadline_unreachable": (
        "neither in orbit nor on the ground is the result down by the deadline; both ways in details"
    ),
}


def _requirements(request: Request) -> Requirements:
    body = OrderRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return body.requirements()  # its fields, built once (FieldsBuiltOnceSerializer), do not refer back to it


def _let_go(response: Response) -> None:
    """Once the response is rendered, break the cycles DRF leaves between a view, its request and
    its response (the renderer's context names the view, the view its request and response, the
    request's parser context the view and the request itself), so that a quote or an order, and
    all it holds, is freed at once: left to the cyclic collector, each request's few hundred
    objects bring the next young collection (every 5,000 objects, config/wsgi.py) sooner, a few
    ms on whichever request meets it (docs/benchmarks.md)."""
    context = getattr(response, "renderer_context", None) or {}
    view, request = context.get("view"), context.get("request")
    if request is not None:
        request.parser_context = None
    if view is not None:
        view.request = view.response = None
    response.renderer_context = None  # type: ignore[attr-defined]  # set by APIView.finalize_response


class QuoteApi(APIView):
    """Rank the placements for an order, with the reason each other pool was turned down. Nothing is reserved."""

    permission_classes = [KeyRoleAllows, IsBuyer]

    @extend_schema(
        request=_ORDER_BODY,
        responses=PolymorphicProxySerializer(
            component_name="QuoteOrOrbitQuote",
            serializers=[QuoteResponseSerializer, OrbitQuoteSerializer],
            resource_type_field_name=None,
        ),
        summary="Get a quote (with a `dataset`: the in-orbit and the ground way, compared)",
        extensions={"x-error-codes": {"422": {"pool_not_offered": _POOL_NOT_OFFERED, **_ORBIT_CODES}}},
    )
    def post(self, request: Request) -> Response:
        orbit_body = _orbit_body(request)
        if orbit_body is not None:
            quote = orbit.orbit_quote_for(
                buyer=organization_of(request), dataset_id=orbit_body.pop("dataset"), **orbit_body
            )
            return Response(quote.render())
        requirements = _requirements(request)
        now = timezone.now()
        result = services.quote(requirements=requirements, now=now)
        credits = quote_voucher_credits(
            buyer=organization_of(request), result=result, requirements=requirements, now=now
        )
        discounts = reserved_discounts(pool_ids={a.pool_id for p in result.placements for a in p.allocations}, at=now)
        response = Response(QuoteSerializer.render(result, requirements, voucher_credits=credits, discounts=discounts))
        response.add_post_render_callback(_let_go)
        return response


class OrderListCreateApi(ListAPIView):
    serializer_class = OrderSerializer
    filterset_fields = ["status", "workload"]

    def get_permissions(self) -> list[Any]:
        return [KeyRoleAllows(), (IsBuyer if self.request.method == "POST" else IsBuyerOrOperator)()]

    def get_queryset(self) -> QuerySet[Order]:
        if getattr(self, "swagger_fake_view", False):
            return Order.objects.none()
        return order_list(organization=organization_of(self.request))

    @extend_schema(
        request=_ORDER_BODY,
        responses={201: OrderSerializer},
        summary=(
            "Place an order: the dispatcher reserves the best placement (422 no_capacity with reasons), "
            "or the chosen offer's pool (422 pool_rejected with its reason)"
        ),
        extensions={
            "x-error-codes": {
                "422": {
                    "no_capacity": "no pool can take the order now; `reasons` counts the pools turned down by reason",
                    "pool_rejected": (
                        "the chosen `pool` cannot take the order; `reason` is its reason, as a quote gives it"
                    ),
                    "pool_not_offered": _POOL_NOT_OFFERED,
                    "orders_blocked": "an unpaid invoice blocks new orders until it is paid",
                    **_ORBIT_CODES,
                }
            }
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        orbit_body = _orbit_body(request)
        if orbit_body is not None:
            order = orbit.orbit_order_place(
                buyer=organization_of(request), dataset_id=orbit_body.pop("dataset"), **orbit_body
            )
            return Response(OrderSerializer(order_list(organization=order.buyer).get(pk=order.pk)).data, status=201)
        requirements = _requirements(request)
        order = services.order_place(buyer=organization_of(request), requirements=requirements)
        response = Response(order_data(order), status=201)  # as order_list reads it (placement_book)
        response.add_post_render_callback(_let_go)
        return response


def _order_for(request: Request, order_id: Any) -> Order:
    order = order_list(organization=organization_of(request)).filter(pk=order_id).first()
    if order is None:
        raise NotFoundError(gettext("No such order."))
    return order


class OrderDetailApi(APIView):
    permission_classes = [KeyRoleAllows, IsBuyerOrOperator]

    @extend_schema(responses=OrderSerializer)
    def get(self, request: Request, order_id: Any) -> Response:
        return Response(OrderSerializer(_order_for(request, order_id)).data)


class OrderCancelApi(APIView):
    permission_classes = [KeyRoleAllows, IsBuyer]

    @extend_schema(request=None, responses=OrderSerializer, summary="Cancel an order whose leases have not started")
    def post(self, request: Request, order_id: Any) -> Response:
        order = services.order_cancel(order=_order_for(request, order_id), by=str(request.user))
        return Response(OrderSerializer(_order_for(request, order.pk)).data)


def _lease_for(request: Request, lease_id: Any) -> Lease:
    lease = lease_list(organization=organization_of(request)).filter(pk=lease_id).first()
    if lease is None:
        raise NotFoundError(gettext("No such lease."))
    return lease


class LeaseListApi(ListAPIView):
    """Buyers: their leases. Providers: the leases on their pools."""

    serializer_class = LeaseSerializer
    permission_classes = [KeyRoleAllows, IsParty]
    filterset_class = LeaseFilter

    def get_queryset(self) -> QuerySet[Lease]:
        if getattr(self, "swagger_fake_view", False):
            return Lease.objects.none()
        return lease_list(organization=organization_of(self.request))


class LeaseDetailApi(APIView):
    def get_permissions(self) -> list[Any]:
        kind = IsBuyer if self.request.method == "PATCH" else IsParty
        return [KeyRoleAllows(), kind()]

    @extend_schema(responses=LeaseSerializer)
    def get(self, request: Request, lease_id: Any) -> Response:
        return Response(LeaseSerializer(_lease_for(request, lease_id)).data)

    @extend_schema(
        request=LeaseUpdateSerializer, responses=LeaseSerializer, summary="Raise a lease's max_price, extend its end"
    )
    def patch(self, request: Request, lease_id: Any) -> Response:
        lease = _lease_for(request, lease_id)
        body = LeaseUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        lease = services.lease_update(lease=lease, by=str(request.user), **body.validated_data)
        return Response(LeaseSerializer(_lease_for(request, lease.pk)).data)


class FeedApi(ListAPIView):
    """What the calling organization should know, newest first: price rises reaching its leases,
    leases ended because a rise passed their max_price."""

    serializer_class = FeedEventSerializer

    def get_queryset(self) -> QuerySet[FeedEvent]:
        if getattr(self, "swagger_fake_view", False):
            return FeedEvent.objects.none()
        return FeedEvent.objects.filter(organization=organization_of(self.request))


class LeaseStartApi(APIView):
    """Provider: the cards are handed over; the lease runs."""

    permission_classes = [KeyRoleAllows, IsProvider]

    @extend_schema(request=None, responses=LeaseSerializer)
    def post(self, request: Request, lease_id: Any) -> Response:
        lease = services.lease_start(lease_id=_lease_for(request, lease_id).pk, by=str(request.user))
        return Response(LeaseSerializer(_lease_for(request, lease.pk)).data)


class LeaseTerminateApi(APIView):
    """Buyer or provider: end the lease now; its cards go back to the pool."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER, Organization.Kind.PROVIDER)]

    @extend_schema(request=None, responses=LeaseSerializer)
    def post(self, request: Request, lease_id: Any) -> Response:
        lease = services.lease_terminate(
            lease=_lease_for(request, lease_id), organization=organization_of(request), by=str(request.user)
        )
        return Response(LeaseSerializer(_lease_for(request, lease.pk)).data)


_DATETIME = DateTimeField()


class PriceIndexApi(APIView):
    """The compute price index: public to any key."""

    permission_classes = [KeyRoleAllows]

    @extend_schema(parameters=[PriceIndexQuerySerializer], responses=PriceIndexSerializer, summary="Price index")
    def get(self, request: Request) -> Response:
        query = PriceIndexQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        # The series come as the API shows them (``price_index``): a month of hours is 720 points,
        # too many to pass through a serializer field by field within the index's 50 ms.
        return Response(
            {
                "granularity": data["granularity"],
                "from": _DATETIME.to_representation(data["start"]),
                "to": _DATETIME.to_representation(data["end"]),
                "currency": "CNY",
                "series": price_index(**data),
            }
        )


class LeaseDepositsApi(APIView):
    """Buyer: deposit card-hours of its reserved lease into the compute bank: they go back on the
    market at the lease's pool; each one another buyer uses earns bank credit."""

    permission_classes = [KeyRoleAllows, IsBuyer]

    @extend_schema(
        request=DepositRequestSerializer,
        responses={201: DepositSerializer},
        summary="Deposit unused reserved card-hours into the compute bank",
        extensions={
            "x-error-codes": {
                "422": {
                    "lease_not_reserved": "only a reserved card lease is deposited",
                    "lease_not_active": "the lease ended",
                    "not_whole_hour": "`start_at` is not a whole hour",
                    "outside_booking": "`start_at` is before this hour or the booking's start, or at its end",
                    "too_many_cards": "more cards than the lease has free of deposits in those hours",
                    "price_not_lower": "`price` is not lower than the pool's price",
                }
            }
        },
    )
    @idempotent
    def post(self, request: Request, lease_id: Any) -> Response:
        lease = _lease_for(request, lease_id)
        body = DepositRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        deposit = deposit_create(
            lease=lease, depositor=organization_of(request), by=str(request.user), **body.validated_data
        )
        return Response(DepositSerializer(deposit).data, status=201)
