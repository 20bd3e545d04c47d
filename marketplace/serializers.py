from datetime import datetime
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from pools.models import ResourcePool
from pools.tariffs import hour_bands, local_hour, next_cheaper_window


class PriceWindowSerializer(serializers.Serializer):
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()
    price_per_card_hour = serializers.DecimalField(max_digits=22, decimal_places=10)


class OfferSerializer(serializers.ModelSerializer):
    """A pool as the supermarket shows it; ``context["now"]`` is the moment priced."""

    pool = serializers.UUIDField(source="pk")
    provider = serializers.CharField(source="provider.slug")
    provider_name = serializers.CharField(source="provider.legal_name")
    hub = serializers.CharField(source="hub_id")
    region = serializers.CharField(source="hub.region")
    gpu_model = serializers.CharField(source="gpu_model_id")
    memory_gb = serializers.IntegerField(source="gpu_model.memory_gb")
    price_per_card_hour = serializers.DecimalField(
        source="price_now", max_digits=22, decimal_places=10, help_text="Price per card-hour now."
    )
    currency = serializers.SerializerMethodField()
    price_band = serializers.SerializerMethodField(help_text="The hub's time-of-use band now.")
    next_cheaper_window = serializers.SerializerMethodField()
    token_prices = serializers.JSONField(source="token_prices_now")
    latency_ms = serializers.SerializerMethodField(help_text="Round trip to user_region, when given.")

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

    def get_latency_ms(self, pool: ResourcePool) -> int | None:
        return getattr(pool, "latency_ms", None)

    def get_next_cheaper_window(self, pool: ResourcePool) -> dict[str, Any] | None:
        prices = [Decimal(price) for price in pool.hour_prices_now]  # type: ignore[attr-defined]
        window = next_cheaper_window(prices, self.now)
        return PriceWindowSerializer(window).data if window else None
