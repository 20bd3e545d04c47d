import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.money import estimate_in_yuan, fen_to_yuan
from core.serializers import EstimateField, FieldsBuiltOnceSerializer, PriceField, StrictSerializer
from marketplace.dispatch import DispatchResult, Requirements
from marketplace.models import CapacityDeposit, Commitment, FeedEvent, Lease, Order, Workload
from pools.models import MAX_POOL_CARDS, GpuModel, Hub, ResourcePool
from pools.reference_data import USER_REGIONS
from pools.serializers import TokenPricesField
from pools.tariffs import hour_bands, local_hour, next_cheaper_window

MAX_DURATION_HOURS = 24 * 366
MAX_HORIZON_DAYS = 90


class PriceWindowSerializer(serializers.Serializer):
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()
    price_per_card_hour = PriceField()


_DATETIME = serializers.DateTimeField()
_PRICE = PriceField()


class OfferSerializer(serializers.ModelSerializer):
    """A pool as the supermarket shows it; ``context["now"]`` is the moment priced."""

    pool = serializers.UUIDField(source="pk")
    provider = serializers.CharField(source="provider.slug")
    provider_name = serializers.CharField(source="provider.legal_name")
    hub = serializers.CharField(source="hub_id")
    region = serializers.ChoiceField(choices=Hub.Region.choices, source="hub.region")
    gpu_model = serializers.CharField(source="gpu_model_id")
    memory_gb = serializers.IntegerField(source="gpu_model.memory_gb")
    price_per_card_hour = PriceField(source="price_now", help_text="Price per card-hour now.")
    currency = serializers.SerializerMethodField()
    price_band = serializers.SerializerMethodField(help_text="The hub's time-of-use band now.")
    next_cheaper_window = serializers.SerializerMethodField()
    token_prices = TokenPricesField(source="token_prices_now")
    latency_ms = serializers.SerializerMethodField(help_text="Round trip to user_region, when given.")
    reserved_price_per_card_hour = PriceField(
        source="reserved_price_now", help_text="Price per card-hour now of a reserved (take-or-pay) booking."
    )
    bank_cards = serializers.SerializerMethodField(
        help_text="Cards deposited by reserved buyers that are free now (compute bank capacity), beside free_cards."
    )

    class Meta:
        model = ResourcePool
        fields = [
            "pool",
            "name",
            "provider",
            "provider_name",
            "hub",
            "region",
            "province",
            "city",
            "gpu_model",
            "memory_gb",
            "cards",
            "free_cards",
            "green_share",
            "pue",
            "interconnect",
            "price_per_card_hour",
            "reserved_price_per_card_hour",
            "bank_cards",
            "currency",
            "price_band",
            "next_cheaper_window",
            "token_prices",
            "latency_ms",
            "last_heartbeat_at",
        ]
        read_only_fields = fields

    @property
    def now(self) -> datetime:
        return self.context["now"]

    def get_currency(self, pool: ResourcePool) -> str:
        return "CNY"

    def get_price_band(self, pool: ResourcePool) -> str:
        return hour_bands(pool.hub.tariff)[local_hour(self.now)]

    def get_bank_cards(self, pool: ResourcePool) -> int:
        return self.context.get("bank_capacity", {}).get(pool.pk, 0)

    def get_latency_ms(self, pool: ResourcePool) -> int | None:
        return getattr(pool, "latency_ms", None)

    @extend_schema_field(PriceWindowSerializer(allow_null=True))
    def get_next_cheaper_window(self, pool: ResourcePool) -> dict[str, Any] | None:
        # A plain dict: a serializer per offer costs half the page's serializing time.
        prices = [Decimal(price) for price in pool.hour_prices_now]  # type: ignore[attr-defined]
        window = next_cheaper_window(prices, self.now)
        if window is None:
            return None
        return {
            "start_at": _DATETIME.to_representation(window.start_at),
            "end_at": _DATETIME.to_representation(window.end_at),
            "price_per_card_hour": _PRICE.to_representation(window.price_per_card_hour),
        }


class OrderRequestSerializer(FieldsBuiltOnceSerializer):
    """What a buyer needs; the same body for a quote and an order."""

    rules: ClassVar[dict[str, str]] = {
        "gpu_requirement_missing": "give `gpu_model` or `min_memory_gb`",
        "required_for_realtime": "`realtime_inference` needs `user_region` and `max_latency_ms`",
        "too_far_ahead": f"`earliest_start` and `deadline` at most {MAX_HORIZON_DAYS} days ahead",
        "deadline_before_start": "`deadline` after `earliest_start`",
        "window_too_short": "from `earliest_start` to `deadline` at least `duration_hours`",
    }

    gpu_model = serializers.SlugRelatedField(
        slug_field="code", queryset=GpuModel.objects.all(), required=False, allow_null=True
    )
    min_memory_gb = serializers.IntegerField(min_value=1, max_value=4096, required=False, allow_null=True)
    cards = serializers.IntegerField(min_value=1, max_value=MAX_POOL_CARDS * 10)
    workload = serializers.ChoiceField(choices=Workload.choices)
    user_region = serializers.ChoiceField(choices=USER_REGIONS, required=False, allow_null=True)
    max_latency_ms = serializers.IntegerField(min_value=1, max_value=1000, required=False, allow_null=True)
    duration_hours = serializers.DecimalField(
        max_digits=8, decimal_places=2, min_value=Decimal("0.01"), max_value=Decimal(MAX_DURATION_HOURS)
    )
    earliest_start = serializers.DateTimeField(required=False, allow_null=True)
    deadline = serializers.DateTimeField(required=False, allow_null=True)
    max_price = PriceField(
        max_digits=12,
        min_value=Decimal("0.0001"),
        required=False,
        allow_null=True,
        help_text="Highest average price per card-hour to pay.",
    )
    min_green_share = serializers.DecimalField(
        max_digits=4, decimal_places=3, min_value=Decimal(0), max_value=Decimal(1), required=False, allow_null=True
    )
    allowed_hubs = serializers.ListField(
        child=serializers.SlugRelatedField(slug_field="code", queryset=Hub.objects.all()),
        required=False,
        max_length=8,
    )
    split = serializers.BooleanField(default=False, help_text="Allow several pools of one hub.")
    commitment = serializers.ChoiceField(
        choices=Commitment.choices,
        default=Commitment.ON_DEMAND,
        help_text=(
            "on_demand: the usage metered is billed. reserved: every booked card-hour is billed whether used or "
            "not (take-or-pay), at the pool's reserved price (its price version's reserved_discount off); it "
            "starts at its booked start, and cancelling before then costs a fee."
        ),
    )
    pool = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text=(
            "Buy this offer: an offer's `pool` id from GET /api/v1/offers/. Only that pool is considered: "
            "the order is placed there, or refused with 422 `pool_rejected` and the pool's reason (as a "
            "quote gives it). An id of no pool in the market is a 422 `pool_not_offered`. In a quote: "
            "the quote for that offer alone."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("gpu_model") and not attrs.get("min_memory_gb"):
            raise serializers.ValidationError(
                {"gpu_model": [gettext("Give a gpu_model or a min_memory_gb.")]}, code="gpu_requirement_missing"
            )
        if attrs["workload"] == Workload.REALTIME_INFERENCE:
            missing = [name for name in ("user_region", "max_latency_ms") if not attrs.get(name)]
            if missing:
                raise serializers.ValidationError(
                    {name: ["Real-time inference needs this, to stay near its users."] for name in missing},
                    code="required_for_realtime",
                )
        start, deadline = attrs.get("earliest_start"), attrs.get("deadline")
        horizon = timezone.now() + timedelta(days=MAX_HORIZON_DAYS)
        for name in ("earliest_start", "deadline"):
            if attrs.get(name) and attrs[name] > horizon:
                raise serializers.ValidationError(
                    {
                        name: [
                            gettext("At most %(MAX_HORIZON_DAYS)s days ahead.") % {"MAX_HORIZON_DAYS": MAX_HORIZON_DAYS}
                        ]
                    },
                    code="too_far_ahead",
                )
        if start and deadline and deadline <= start:
            raise serializers.ValidationError(
                {"deadline": [gettext("The deadline must come after the earliest start.")]},
                code="deadline_before_start",
            )
        if start and deadline and (deadline - start) < timedelta(hours=float(attrs["duration_hours"])):
            raise serializers.ValidationError(
                {"deadline": [gettext("The window from earliest_start to deadline is shorter than duration_hours.")]},
                code="window_too_short",
            )
        return attrs

    def requirements(self) -> Requirements:
        data = self.validated_data
        return Requirements(
            cards=data["cards"],
            duration_hours=float(data["duration_hours"]),
            workload=data["workload"],
            gpu_model=data["gpu_model"].code if data.get("gpu_model") else None,
            min_memory_gb=data.get("min_memory_gb"),
            user_region=data.get("user_region"),
            max_latency_ms=data.get("max_latency_ms"),
            earliest_start=data.get("earliest_start"),
            deadline=data.get("deadline"),
            max_price=float(data["max_price"]) if data.get("max_price") is not None else None,
            min_green_share=float(data["min_green_share"]) if data.get("min_green_share") is not None else None,
            allowed_hubs=frozenset(hub.code for hub in data.get("allowed_hubs") or []) or None,
            split=data["split"],
            pool=data.get("pool"),
            commitment=data["commitment"],
        )


def _money(value: float) -> str:
    return str(estimate_in_yuan(value))


def _after_vouchers(cost: float, credit: int) -> str:
    """The estimated cost less what the buyer's vouchers would pay (``credit`` fen)."""
    return str(max(Decimal("0.00"), estimate_in_yuan(cost) - fen_to_yuan(credit)))


def _reserved_cost(placement: Any, discounts: Mapping[Any, Decimal]) -> float:
    """The placement booked reserved: every card-hour at its pool's reserved price."""
    return sum(
        allocation.estimated_cost * (1 - float(discounts.get(allocation.pool_id, 0)))
        for allocation in placement.allocations
    )


class QuoteSerializer:
    """The dispatcher's answer as the API shows it."""

    @staticmethod
    def render(
        result: DispatchResult,
        requirements: Requirements,
        voucher_credits: Sequence[int] | None = None,
        discounts: Mapping[Any, Decimal] | None = None,
    ) -> dict[str, Any]:
        credits = voucher_credits or [0] * len(result.placements)
        discounts = discounts or {}
        return {
            "placements": [
                {
                    "pool": str(placement.allocations[0].pool_id),
                    "pools": [{"pool": str(a.pool_id), "cards": a.cards} for a in placement.allocations],
                    "hub": placement.hub,
                    "region": placement.region,
                    "start_at": placement.start_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "end_at": placement.end_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "price_locked_until": placement.end_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "estimated_cost": _money(placement.estimated_cost),
                    "estimated_cost_after_vouchers": _after_vouchers(placement.estimated_cost, credit),
                    "average_price_per_card_hour": _PRICE.to_representation(
                        placement.estimated_cost / placement.cards / requirements.duration_hours
                    ),
                    "reserved_estimated_cost": _money(_reserved_cost(placement, discounts)),
                    "estimated_electricity_cost": _money(placement.electricity_cost),
                    "latency_ms": placement.latency_ms,
                    "currency": "CNY",
                }
                for placement, credit in zip(result.placements, credits, strict=True)
            ],
            "rejected": {
                "summary": result.summary(requirements),
                "message": result.summary_text(requirements),
                "pools": [{"pool": str(pool_id), "reason": reason} for pool_id, reason in result.rejections.items()],
            },
            "warnings": result.warnings,
        }


class LeaseSerializer(serializers.ModelSerializer):
    hub = serializers.CharField(source="pool.hub_id", read_only=True)
    gpu_model = serializers.CharField(source="pool.gpu_model_id", read_only=True)
    estimated_cost = EstimateField()
    currency = serializers.SerializerMethodField()
    price_version = serializers.IntegerField(
        source="price_plan.version", read_only=True, help_text="The pool's price version the lease was placed on."
    )
    price_locked_until = serializers.DateTimeField(
        read_only=True,
        help_text="Usage before this (the booked end; a pay-as-you-go token account's opening) is billed with "
        "price_version; after it (an extension's hours, up to end_at) at the price in force.",
    )
    max_price = PriceField(allow_null=True, read_only=True, help_text="The buyer's ceiling per card-hour.")

    class Meta:
        model = Lease
        fields = [
            "id",
            "order",
            "pool",
            "hub",
            "gpu_model",
            "cards",
            "workload",
            "status",
            "start_at",
            "end_at",
            "started_at",
            "ended_at",
            "end_reason",
            "ended_by",
            "estimated_cost",
            "currency",
            "price_version",
            "price_locked_until",
            "max_price",
            "commitment",
            "deposit",
            "created_at",
        ]
        read_only_fields = fields

    def get_currency(self, lease: Lease) -> str:
        return "CNY"


class OrbitRequestSerializer(StrictSerializer):
    """An in-orbit order (or its quote): analyse a dataset a satellite holds, the result on the ground
    by the deadline."""

    dataset = serializers.UUIDField()
    result_size_gb = serializers.DecimalField(
        max_digits=10, decimal_places=3, min_value=Decimal("0.001"), max_value=Decimal(100_000)
    )
    deadline = serializers.DateTimeField(required=False, allow_null=True)

    def validate_deadline(self, value: datetime | None) -> datetime | None:
        if value is not None and value > timezone.now() + timedelta(days=MAX_HORIZON_DAYS):
            raise serializers.ValidationError(
                gettext("At most %(MAX_HORIZON_DAYS)s days ahead.") % {"MAX_HORIZON_DAYS": MAX_HORIZON_DAYS}
            )
        return value


class OrbitWindowSerializer(serializers.Serializer):
    what = serializers.CharField()
    station = serializers.CharField()
    pass_start = serializers.DateTimeField()
    pass_end = serializers.DateTimeField()
    max_elevation = serializers.FloatField()
    start = serializers.DateTimeField(help_text="The part of the pass used: from ...")
    end = serializers.DateTimeField(help_text="... until.")
    gb = serializers.DecimalField(max_digits=12, decimal_places=3, help_text="Brought down in it.")


class OrbitOptionSerializer(serializers.Serializer):
    plan = serializers.ChoiceField(choices=["in_orbit", "ground"])
    result_at = serializers.DateTimeField(allow_null=True)
    time_to_result_seconds = serializers.IntegerField(allow_null=True)
    estimated_cost = serializers.DecimalField(max_digits=18, decimal_places=2, allow_null=True)
    meets_deadline = serializers.BooleanField()
    reason = serializers.CharField(allow_blank=True)
    steps = serializers.ListField(child=serializers.DictField())
    contact_windows = OrbitWindowSerializer(many=True)


class OrbitQuoteSerializer(serializers.Serializer):
    """Both ways to the result (in orbit; downlink then ground), the one chosen and why."""

    dataset = serializers.UUIDField()
    satellite = serializers.UUIDField()
    result_size_gb = serializers.DecimalField(max_digits=10, decimal_places=3)
    deadline = serializers.DateTimeField(allow_null=True)
    chosen = serializers.CharField(allow_null=True, help_text="The plan chosen: in_orbit or ground; null if none.")
    why = serializers.CharField()
    options = OrbitOptionSerializer(many=True)


class OrbitPlanSerializer(serializers.Serializer):
    dataset = serializers.UUIDField()
    plan = serializers.ChoiceField(choices=["in_orbit", "ground"])
    result_size_gb = serializers.DecimalField(max_digits=10, decimal_places=3)
    result_at = serializers.DateTimeField()
    quote = OrbitQuoteSerializer()


class OrderSerializer(serializers.ModelSerializer):
    gpu_model = serializers.CharField(source="gpu_model_id", allow_null=True, read_only=True)
    max_price = PriceField(allow_null=True, read_only=True)
    estimated_cost = EstimateField()
    leases = LeaseSerializer(many=True, read_only=True)
    lease = serializers.SerializerMethodField(help_text="The order's first lease (the only one unless split).")
    user_region = serializers.SerializerMethodField(help_text="Where the users are; null when not given.")
    orbit = serializers.SerializerMethodField(help_text="An in-orbit order's plan and the quote that chose it.")
    price_locked_until = serializers.SerializerMethodField(
        help_text="The booked hours' prices are locked until then (the leases' booked end)."
    )

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "gpu_model",
            "min_memory_gb",
            "cards",
            "workload",
            "user_region",
            "max_latency_ms",
            "duration_hours",
            "earliest_start",
            "deadline",
            "max_price",
            "min_green_share",
            "allowed_hubs",
            "split",
            "commitment",
            "pool",
            "estimated_cost",
            "currency",
            "warnings",
            "price_locked_until",
            "lease",
            "leases",
            "orbit",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=USER_REGIONS, allow_null=True))
    def get_user_region(self, order: Order) -> str | None:
        return order.user_region or None

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_price_locked_until(self, order: Order) -> str | None:
        ends = [lease.price_locked_until for lease in order.leases.all()]
        return _DATETIME.to_representation(max(ends)) if ends else None

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_lease(self, order: Order) -> str | None:
        leases = sorted(order.leases.all(), key=lambda lease: str(lease.pk))
        return str(leases[0].pk) if leases else None

    @extend_schema_field(OrbitPlanSerializer(allow_null=True))
    def get_orbit(self, order: Order) -> dict[str, Any] | None:
        orbit = getattr(order, "orbit", None)
        if orbit is None:
            return None
        return {
            "dataset": str(orbit.dataset_id),
            "plan": orbit.plan,
            "result_size_gb": str(orbit.result_size_gb),
            "result_at": _DATETIME.to_representation(orbit.result_at),
            "quote": orbit.quote,
        }


@functools.cache
def _order_serializer() -> OrderSerializer:
    return OrderSerializer()


def order_data(order: Order) -> dict[str, Any]:
    """``OrderSerializer(order).data``, from one serializer whose fields are built once: a
    ModelSerializer builds its fields, and its leases' serializer's, anew for each instance (most
    of what it costs an order); rendering keeps nothing between calls and reads no context."""
    return _order_serializer().to_representation(order)


class _QuotePoolSerializer(serializers.Serializer):
    pool = serializers.UUIDField()
    cards = serializers.IntegerField()


class _QuotePlacementSerializer(serializers.Serializer):
    pool = serializers.UUIDField()
    pools = _QuotePoolSerializer(many=True)
    hub = serializers.CharField()
    region = serializers.ChoiceField(choices=Hub.Region.choices)
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()
    price_locked_until = serializers.DateTimeField(help_text="Its booked hours keep the quoted prices until then.")
    estimated_cost = serializers.DecimalField(max_digits=18, decimal_places=2)
    estimated_cost_after_vouchers = serializers.DecimalField(
        max_digits=18, decimal_places=2, help_text="Less what the calling buyer's vouchers would pay now."
    )
    average_price_per_card_hour = PriceField()
    reserved_estimated_cost = serializers.DecimalField(
        max_digits=18,
        decimal_places=2,
        help_text="The same hours booked reserved: billed whether used or not, at the pools' reserved prices.",
    )
    estimated_electricity_cost = serializers.DecimalField(max_digits=18, decimal_places=2)
    latency_ms = serializers.IntegerField(allow_null=True)
    currency = serializers.CharField()


class _RejectionSummarySerializer(serializers.Serializer):
    reason = serializers.CharField()
    message = serializers.CharField()
    pools = serializers.IntegerField()


class _RejectedPoolSerializer(serializers.Serializer):
    pool = serializers.UUIDField()
    reason = serializers.CharField()


class _RejectedSerializer(serializers.Serializer):
    summary = _RejectionSummarySerializer(many=True)
    message = serializers.CharField()
    pools = _RejectedPoolSerializer(many=True)


class QuoteResponseSerializer(serializers.Serializer):
    """The schema of a quote (rendered by ``QuoteSerializer.render``)."""

    placements = _QuotePlacementSerializer(many=True)
    rejected = _RejectedSerializer()
    warnings = serializers.ListField(child=serializers.CharField())


MAX_INDEX_RANGE = {"hour": timedelta(days=93), "day": timedelta(days=366)}


class PriceIndexQuerySerializer(StrictSerializer):
    gpu_model = serializers.CharField(required=False, help_text="One GPU model; default every model.")
    hub = serializers.CharField(required=False, help_text="One hub's index.")
    region = serializers.ChoiceField(
        choices=["east", "west", "national"], required=False, help_text="A region's index; default national."
    )
    granularity = serializers.ChoiceField(choices=["hour", "day"], default="hour", help_text="Day: local days.")
    start = serializers.DateTimeField(required=False, help_text="From (inclusive); default 24 hours (30 days) ago.")
    end = serializers.DateTimeField(required=False, help_text="To (exclusive); default the end of this hour.")

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"], fields["to"] = fields.pop("start"), fields.pop("end")
        return fields

    def validate_gpu_model(self, value: str) -> str:
        if not GpuModel.objects.filter(code=value).exists():
            raise serializers.ValidationError(
                gettext("No such GPU model; see GET /api/v1/gpu-models/."), code="unknown_gpu_model"
            )
        return value

    def validate_hub(self, value: str) -> str:
        if not Hub.objects.filter(code=value).exists():
            raise serializers.ValidationError(gettext("No such hub; see GET /api/v1/hubs/."), code="unknown_hub")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "hub" in attrs and "region" in attrs:
            raise serializers.ValidationError({"region": [gettext("Give a hub or a region, not both.")]})
        granularity = attrs["granularity"]
        # By default up to the end of this hour: one answer for every key within an hour.
        end = attrs.pop("to", None) or timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = attrs.pop("from", None) or end - (timedelta(days=1) if granularity == "hour" else timedelta(days=30))
        if start >= end:
            raise serializers.ValidationError({"to": [gettext("'to' must come after 'from'.")]})
        limit = MAX_INDEX_RANGE[granularity]
        if end - start > limit:
            raise serializers.ValidationError(
                {
                    "from": [
                        gettext("At most %(days)s days at %(granularity)s granularity; narrow the range.")
                        % {"days": limit.days, "granularity": granularity}
                    ]
                }
            )
        area = attrs.pop("hub", None) or attrs.pop("region", None) or "national"
        return {**attrs, "area": area, "start": start, "end": end}


class PriceIndexPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="The start of the hour, or of the local day.")
    p10 = PriceField()
    median = PriceField()
    p90 = PriceField()
    cards = serializers.IntegerField(help_text="Free cards offered (per hour, on average over a day).")


class PriceIndexSeriesSerializer(serializers.Serializer):
    gpu_model = serializers.CharField()
    area = serializers.CharField(help_text="A hub's code, east, west or national.")
    points = PriceIndexPointSerializer(many=True)


class PriceIndexSerializer(serializers.Serializer):
    granularity = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    currency = serializers.CharField()
    series = PriceIndexSeriesSerializer(many=True)

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"], fields["to"] = fields.pop("start"), fields.pop("end")
        fields["from"].source, fields["to"].source = "start", "end"
        return fields


class LeaseUpdateSerializer(StrictSerializer):
    rules = {"nothing_to_change": "give max_price, end_at or both"}

    max_price = PriceField(
        max_digits=12,
        min_value=Decimal("0.0001"),
        allow_null=True,
        required=False,
        help_text="The new ceiling per card-hour, at least the current one; null lifts it.",
    )
    end_at = serializers.DateTimeField(
        required=False,
        help_text="Extend the lease to this end: later than its end, at most LEASE_EXTENSION_MAX_HOURS from now. "
        "The extended hours are not price-locked: they pay the price in force, rises after their notice.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(gettext("Give max_price, end_at or both."), code="nothing_to_change")
        return attrs


class FeedEventSerializer(serializers.ModelSerializer):
    lease = serializers.UUIDField(source="lease_id")

    class Meta:
        model = FeedEvent
        fields = ["id", "kind", "lease", "occurred_at", "data"]
        read_only_fields = fields


class DepositRequestSerializer(StrictSerializer):
    """Deposit card-hours of a reserved lease into the compute bank."""

    cards = serializers.IntegerField(min_value=1, max_value=MAX_POOL_CARDS, help_text="Cards of the lease to deposit.")
    start_at = serializers.DateTimeField(
        help_text="From this whole hour (now or later) to the booking's end (the lease's price_locked_until)."
    )
    price = PriceField(
        required=False,
        allow_null=True,
        help_text="Price per card-hour for resale, below the pool's price; null: the pool's on-demand price.",
    )


class DepositSerializer(serializers.ModelSerializer):
    """A deposit, as its depositor sees it."""

    price = PriceField(allow_null=True, read_only=True)
    hours_deposited = serializers.SerializerMethodField(help_text="Card-hours deposited (after any withdrawal).")

    class Meta:
        model = CapacityDeposit
        fields = [
            "id",
            "lease",
            "pool",
            "cards",
            "start_at",
            "end_at",
            "deposited_until",
            "price",
            "withdrawn_at",
            "hours_deposited",
            "created_at",
        ]
        read_only_fields = fields

    def get_hours_deposited(self, deposit: CapacityDeposit) -> str:
        hours = Decimal((deposit.end_at - deposit.start_at).total_seconds()) / 3600 * deposit.cards
        return str(hours.quantize(Decimal("0.01")))
