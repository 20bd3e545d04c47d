from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import PriceField, StrictSerializer
from pools.models import MAX_POOL_CARDS, GpuModel, Hub, ResourcePool
from pools.reference_data import HUBS
from pools.selectors import pool_is_stale, price_plan_at

PROVINCES = sorted({province for hub in HUBS for province in hub["provinces"]})
MAX_TOKEN_MODELS = 100


class HubSerializer(serializers.ModelSerializer):
    electricity = serializers.JSONField(source="tariff", help_text="Time-of-use tariff, yuan per kWh, local time.")

    class Meta:
        model = Hub
        fields = [
            "code",
            "name",
            "name_zh",
            "region",
            "cluster",
            "provinces",
            "electricity",
            "pue",
            "green_share",
            "latency_ms",
        ]


class GpuModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuModel
        fields = ["code", "name", "vendor", "memory_gb", "fp16_tflops", "power_watts"]


def _price_field(**kwargs: Any) -> PriceField:
    return PriceField(max_digits=12, min_value=Decimal("0.0001"), max_value=Decimal("100000"), **kwargs)


class TokenPriceSerializer(StrictSerializer):
    input = PriceField(max_digits=12, min_value=Decimal(0), max_value=Decimal(10000), help_text="Per million.")
    output = PriceField(max_digits=12, min_value=Decimal(0), max_value=Decimal(10000), help_text="Per million.")


_PRICE = PriceField()


class TokenPricesField(serializers.DictField):
    """Prices per million input and output tokens, by model name."""

    child = TokenPriceSerializer()

    def to_representation(self, value: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
        # Each price through PriceField, without a serializer per model: offers list many.
        return {
            str(model): {side: _PRICE.to_representation(price) for side, price in sides.items()}
            for model, sides in value.items()
        }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if len(value) > MAX_TOKEN_MODELS:
            raise serializers.ValidationError(
                gettext("At most %(MAX_TOKEN_MODELS)s models.") % {"MAX_TOKEN_MODELS": MAX_TOKEN_MODELS},
                code="too_many_models",
            )
        if any(not name or len(name) > 100 for name in value):
            raise serializers.ValidationError(
                gettext("Model names have 1 to 100 characters."), code="invalid_model_name"
            )
        return value


_TOKEN_PRICES = TokenPricesField()


class TimeOfUseField(serializers.DictField):
    child = serializers.DecimalField(max_digits=8, decimal_places=6, min_value=Decimal("0.1"), max_value=Decimal("10"))

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if not value or len(value) > 24:
            raise serializers.ValidationError(gettext("Give a factor for 1 to 24 bands."), code="invalid_bands")
        return value


class PoolCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    hub = serializers.SlugRelatedField(slug_field="code", queryset=Hub.objects.all())
    province = serializers.ChoiceField(choices=PROVINCES)
    city = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    gpu_model = serializers.SlugRelatedField(slug_field="code", queryset=GpuModel.objects.all())
    cards = serializers.IntegerField(min_value=1, max_value=MAX_POOL_CARDS)
    price_per_card_hour = _price_field(help_text="Base (flat-hour) price per card-hour, CNY.")
    time_of_use = TimeOfUseField(
        required=False, help_text="Price factor per tariff band; default: the hub's tariff passed through."
    )
    token_prices = TokenPricesField(required=False, help_text="Per million input/output tokens by model name.")
    pue = serializers.DecimalField(max_digits=4, decimal_places=2, min_value=Decimal("1.0"), max_value=Decimal("3"))
    green_share = serializers.DecimalField(max_digits=4, decimal_places=3, min_value=Decimal(0), max_value=Decimal(1))
    interconnect = serializers.ChoiceField(
        choices=ResourcePool.Interconnect.choices, default=ResourcePool.Interconnect.ETHERNET
    )


class PoolUpdateSerializer(StrictSerializer):
    """Description fields change at once; price fields make a new price version."""

    name = serializers.CharField(max_length=100, required=False)
    city = serializers.CharField(max_length=64, required=False, allow_blank=True)
    cards = serializers.IntegerField(min_value=1, max_value=MAX_POOL_CARDS, required=False)
    pue = serializers.DecimalField(
        max_digits=4, decimal_places=2, min_value=Decimal("1.0"), max_value=Decimal("3"), required=False
    )
    green_share = serializers.DecimalField(
        max_digits=4, decimal_places=3, min_value=Decimal(0), max_value=Decimal(1), required=False
    )
    interconnect = serializers.ChoiceField(choices=ResourcePool.Interconnect.choices, required=False)
    price_per_card_hour = _price_field(required=False)
    time_of_use = TimeOfUseField(required=False)
    token_prices = TokenPricesField(required=False)
    effective_from = serializers.DateTimeField(
        required=False, help_text="When the new prices take effect: now (default) or later, never earlier."
    )

    rules: ClassVar[dict[str, str]] = {
        "empty_update": "change at least one field",
        "effective_from_without_prices": "`effective_from` comes with the prices that take effect then",
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(gettext("Nothing to change."), code="empty_update")
        if "effective_from" in attrs and not any(
            field in attrs for field in ("price_per_card_hour", "time_of_use", "token_prices")
        ):
            raise serializers.ValidationError(
                {"effective_from": [gettext("Give the prices that take effect then.")]},
                code="effective_from_without_prices",
            )
        return attrs


class HeartbeatSerializer(StrictSerializer):
    healthy_cards = serializers.IntegerField(min_value=0, max_value=MAX_POOL_CARDS)
    observed_at = serializers.DateTimeField()


class PoolActionSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class PoolSerializer(serializers.ModelSerializer):
    provider = serializers.SlugRelatedField(slug_field="slug", read_only=True)  # type: ignore[var-annotated]
    hub = serializers.CharField(source="hub_id", read_only=True)
    region = serializers.ChoiceField(choices=Hub.Region.choices, source="hub.region", read_only=True)
    gpu_model = serializers.CharField(source="gpu_model_id", read_only=True)
    stale = serializers.SerializerMethodField()
    price_per_card_hour = serializers.SerializerMethodField(help_text="Base price of the version in force now.")
    time_of_use = serializers.SerializerMethodField()
    token_prices = serializers.SerializerMethodField()
    price_version = serializers.SerializerMethodField()

    class Meta:
        model = ResourcePool
        fields = [
            "id",
            "name",
            "provider",
            "hub",
            "region",
            "province",
            "city",
            "gpu_model",
            "cards",
            "reserved_cards",
            "healthy_cards",
            "free_cards",
            "pue",
            "green_share",
            "interconnect",
            "status",
            "status_changed_at",
            "status_changed_by",
            "last_heartbeat_at",
            "stale",
            "price_version",
            "price_per_card_hour",
            "time_of_use",
            "token_prices",
            "created_at",
        ]
        read_only_fields = fields

    def _plan(self, pool: ResourcePool) -> Any:
        """The version in force now; lists pass them in bulk as ``context["plans"]``."""
        plans = self.context.setdefault("plans", {})  # type: ignore[attr-defined]
        if pool.pk not in plans:
            plans[pool.pk] = price_plan_at(pool_id=pool.pk, at=timezone.now())
        return plans[pool.pk]

    def get_stale(self, pool: ResourcePool) -> bool:
        return pool_is_stale(pool)

    def get_price_version(self, pool: ResourcePool) -> int | None:
        plan = self._plan(pool)
        return plan.version if plan else None

    @extend_schema_field(PriceField(allow_null=True))
    def get_price_per_card_hour(self, pool: ResourcePool) -> str | None:
        plan = self._plan(pool)
        return _PRICE.to_representation(plan.price_per_card_hour) if plan else None

    def get_time_of_use(self, pool: ResourcePool) -> dict[str, str]:
        plan = self._plan(pool)
        return plan.time_of_use if plan else {}

    @extend_schema_field(TokenPricesField())
    def get_token_prices(self, pool: ResourcePool) -> dict[str, Any]:
        plan = self._plan(pool)
        return _TOKEN_PRICES.to_representation(plan.token_prices if plan else {})


class PricePlanSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    effective_from = serializers.DateTimeField(help_text="From when new orders are priced with it.")
    running_from = serializers.DateTimeField(
        help_text="From when running leases pay it outside their price lock (a rise: after the notice)."
    )
    rise = serializers.BooleanField(help_text="Higher in some hour or token price than what running leases paid.")
    price_per_card_hour = PriceField()
    currency = serializers.CharField()
    time_of_use = serializers.JSONField()
    hour_prices = serializers.ListField(
        child=PriceField(), help_text="Price per card-hour for each local (Asia/Shanghai) hour 0..23."
    )
    token_prices = TokenPricesField()
    reserved_discount = serializers.DecimalField(
        max_digits=4, decimal_places=3, help_text="Off the hour prices for reserved bookings (0.25: 25% off)."
    )
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()


class PriceChangeSerializer(StrictSerializer):
    """A new price version: what is not given carries over from the latest one."""

    price_per_card_hour = _price_field(required=False)
    time_of_use = TimeOfUseField(required=False)
    token_prices = TokenPricesField(required=False)
    reserved_discount = serializers.DecimalField(
        required=False,
        max_digits=4,
        decimal_places=3,
        min_value=Decimal(0),
        max_value=Decimal("0.9"),
        help_text="Off the hour prices for reserved (take-or-pay) bookings, 0 to 0.9 (0.25: 25% off).",
    )
    effective_from = serializers.DateTimeField(
        required=False, help_text="When new orders pay it: now (default) or later, never earlier."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = ("price_per_card_hour", "time_of_use", "token_prices", "reserved_discount")
        if not any(field in attrs for field in given):
            raise serializers.ValidationError(
                gettext("Give price_per_card_hour, time_of_use, token_prices or reserved_discount."),
                code="no_price_given",
            )
        return attrs


class AffectedLeaseSerializer(serializers.Serializer):
    lease = serializers.UUIDField()
    status = serializers.CharField()
    cards = serializers.IntegerField()
    end_at = serializers.DateTimeField()
    price_locked_until = serializers.DateTimeField()
    takes_effect_at = serializers.DateTimeField(help_text="When the lease starts paying the new version.")
    expected_cost_change = serializers.DecimalField(
        max_digits=18,
        decimal_places=2,
        help_text="Yuan: its unlocked hours (past price_locked_until) from takes_effect_at to end_at, its cards x "
        "the new price less the one it would pay without this version, per time-of-use band.",
    )
    max_price = PriceField(allow_null=True)
    ends_for_max_price = serializers.BooleanField(
        help_text="The new price is above the lease's max_price: it would end price_above_max at takes_effect_at."
    )


class PriceChangeResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    version = PricePlanSerializer()
    affected_leases = AffectedLeaseSerializer(many=True)


class DryRunSerializer(StrictSerializer):
    dry_run = serializers.BooleanField(default=False, help_text="true: change nothing, list the leases reached.")
