from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import PriceField, StrictSerializer
from pools.models import MAX_POOL_CARDS, MODEL_NAME, ModelEndpoint
from pools.selectors import pool_is_stale, price_plan_at
from pools.serializers import TokenPriceSerializer
from pools.tariffs import hour_bands, local_hour

MAX_THROUGHPUT_PER_CARD = 1_000_000
_PRICE = PriceField()


def _token_price(**kwargs: Any) -> PriceField:
    return PriceField(
        max_digits=12, min_value=Decimal(0), max_value=Decimal(10000), help_text="CNY per million tokens.", **kwargs
    )


class EndpointCreateSerializer(StrictSerializer):
    pool = serializers.UUIDField(help_text="One of your pools.")
    model = serializers.CharField(
        max_length=64, validators=[MODEL_NAME], help_text="e.g. qwen3-32b, deepseek-v3, glm-4.5"
    )
    input_price = _token_price()
    output_price = _token_price()
    throughput_per_card = serializers.IntegerField(
        min_value=1, max_value=MAX_THROUGHPUT_PER_CARD, help_text="Tokens (input and output) per second per card."
    )
    cards = serializers.IntegerField(min_value=1, max_value=MAX_POOL_CARDS, help_text="Cards dedicated to it.")


class EndpointRepriceSerializer(StrictSerializer):
    input_price = _token_price()
    output_price = _token_price()
    effective_from = serializers.DateTimeField(
        required=False, help_text="When the new prices take effect: now (default) or later, never earlier."
    )


class EndpointSerializer(serializers.ModelSerializer):
    """An endpoint with the prices of its pool's version in force now: the base prices and, for
    the current local hour's time-of-use band, the prices charged now."""

    pool = serializers.UUIDField(source="pool_id", read_only=True)
    provider = serializers.CharField(source="pool.provider.slug", read_only=True)
    hub = serializers.CharField(source="pool.hub_id", read_only=True)
    gpu_model = serializers.CharField(source="pool.gpu_model_id", read_only=True)
    stale = serializers.SerializerMethodField(help_text="The pool's agent has not sent a heartbeat lately.")
    price_version = serializers.SerializerMethodField()
    prices = serializers.SerializerMethodField()
    prices_now = serializers.SerializerMethodField()

    class Meta:
        model = ModelEndpoint
        fields = [
            "id",
            "pool",
            "provider",
            "hub",
            "gpu_model",
            "model",
            "throughput_per_card",
            "cards",
            "status",
            "status_changed_at",
            "status_changed_by",
            "stale",
            "price_version",
            "prices",
            "prices_now",
            "created_at",
        ]
        read_only_fields = fields

    def _plan(self, endpoint: ModelEndpoint) -> Any:
        """The pool's version in force now; lists pass them in bulk as ``context["plans"]``."""
        plans = self.context.setdefault("plans", {})  # type: ignore[attr-defined]
        if endpoint.pool_id not in plans:
            plans[endpoint.pool_id] = price_plan_at(pool_id=endpoint.pool_id, at=timezone.now())
        return plans[endpoint.pool_id]

    def _prices(self, endpoint: ModelEndpoint, band: str | None) -> dict[str, str] | None:
        plan = self._plan(endpoint)
        if plan is None or endpoint.model not in plan.token_prices:
            return None
        return {
            side: _PRICE.to_representation(
                Decimal(plan.token_prices[endpoint.model][side])
                if band is None
                else plan.token_rate(endpoint.model, side, band)
            )
            for side in ("input", "output")
        }

    def get_stale(self, endpoint: ModelEndpoint) -> bool:
        return pool_is_stale(endpoint.pool)

    def get_price_version(self, endpoint: ModelEndpoint) -> int | None:
        plan = self._plan(endpoint)
        return plan.version if plan else None

    @extend_schema_field(TokenPriceSerializer(allow_null=True))
    def get_prices(self, endpoint: ModelEndpoint) -> dict[str, str] | None:
        return self._prices(endpoint, None)

    @extend_schema_field(TokenPriceSerializer(allow_null=True))
    def get_prices_now(self, endpoint: ModelEndpoint) -> dict[str, str] | None:
        return self._prices(endpoint, hour_bands(endpoint.pool.hub.tariff)[local_hour(timezone.now())])
