from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext
from rest_framework import serializers

from core.serializers import PriceField, StrictSerializer
from marketplace.models import Order
from marketplace.serializers import _after_vouchers, _money
from marketplace.token_dispatch import BATCH, REALTIME, TokenDispatchResult, TokenRequest
from pools.models import MODEL_NAME
from pools.reference_data import USER_REGIONS

MAX_TOKENS = 10**12
_PRICE = PriceField()


class TokenRequestSerializer(StrictSerializer):
    model = serializers.CharField(max_length=64, validators=[MODEL_NAME], help_text="e.g. deepseek-v3")
    input_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, help_text="Expected input tokens.")
    output_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, help_text="Expected output tokens.")
    workload = serializers.ChoiceField(choices=[REALTIME, BATCH])
    user_region = serializers.ChoiceField(choices=sorted(USER_REGIONS), required=False)
    max_latency_ms = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    deadline = serializers.DateTimeField(required=False, help_text="Batch: when the tokens must be processed by.")
    endpoint = serializers.UUIDField(required=False, help_text="The token offer chosen: that endpoint only.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["input_tokens"] + attrs["output_tokens"] == 0:
            raise serializers.ValidationError({"output_tokens": [gettext("Give some tokens.")]}, code="no_tokens")
        if attrs["workload"] == REALTIME and "user_region" not in attrs:
            raise serializers.ValidationError(
                {"user_region": [gettext("Real-time work needs the users' region.")]}, code="required"
            )
        if attrs["workload"] == BATCH and "deadline" not in attrs:
            raise serializers.ValidationError({"deadline": [gettext("Batch work needs a deadline.")]}, code="required")
        return attrs

    def token_request(self) -> TokenRequest:
        data = self.validated_data
        return TokenRequest(
            model=data["model"],
            input_tokens=data["input_tokens"],
            output_tokens=data["output_tokens"],
            workload=data["workload"],
            user_region=data.get("user_region"),
            max_latency_ms=data.get("max_latency_ms"),
            deadline=data.get("deadline"),
        )


def _iso(value: Any) -> str:
    return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def render_token_quote(
    result: TokenDispatchResult, request: TokenRequest, *, voucher_credits: Sequence[int]
) -> dict[str, Any]:
    """The token dispatcher's answer, as card quotes show theirs; ``voucher_credits``: what the buyer's
    vouchers would pay of each placement, in fen (``token_quote_voucher_credits``)."""
    millions = Decimal(request.tokens) / 1_000_000
    return {
        "placements": [
            {
                "endpoint": str(placement.endpoint_id),
                "hub": placement.hub,
                "region": placement.region,
                "start_at": _iso(placement.start_at),
                "end_at": _iso(placement.end_at),
                "estimated_cost": _money(placement.estimated_cost),
                "estimated_cost_after_vouchers": _after_vouchers(placement.estimated_cost, credit),
                "average_price_per_million_tokens": _PRICE.to_representation(
                    Decimal(str(placement.estimated_cost)) / millions
                ),
                "estimated_electricity_cost": _money(placement.electricity_cost),
                "electricity_cost_per_million_tokens": _PRICE.to_representation(
                    Decimal(str(placement.electricity_cost)) / millions
                ),
                "latency_ms": placement.latency_ms,
                "currency": "CNY",
            }
            for placement, credit in zip(result.placements, voucher_credits, strict=True)
        ],
        "rejected": {
            "summary": result.summary(request),
            "message": result.summary_text(request),
            "endpoints": [
                {"endpoint": str(endpoint_id), "reason": reason} for endpoint_id, reason in result.rejections.items()
            ],
        },
    }


class _TokenPlacementSerializer(serializers.Serializer):
    endpoint = serializers.UUIDField()
    hub = serializers.CharField()
    region = serializers.CharField()
    start_at = serializers.DateTimeField()
    end_at = serializers.DateTimeField()
    estimated_cost = serializers.DecimalField(max_digits=18, decimal_places=2)
    estimated_cost_after_vouchers = serializers.DecimalField(
        max_digits=18,
        decimal_places=2,
        help_text="Less what the calling buyer's vouchers would pay now, as they pay token usage on the invoice.",
    )
    average_price_per_million_tokens = PriceField()
    estimated_electricity_cost = serializers.DecimalField(max_digits=18, decimal_places=2)
    electricity_cost_per_million_tokens = PriceField()
    latency_ms = serializers.IntegerField(allow_null=True)
    currency = serializers.CharField()


class _TokenSummarySerializer(serializers.Serializer):
    reason = serializers.CharField()
    message = serializers.CharField()
    endpoints = serializers.IntegerField()


class _TokenRejectedEndpointSerializer(serializers.Serializer):
    endpoint = serializers.UUIDField()
    reason = serializers.CharField()


class _TokenRejectedSerializer(serializers.Serializer):
    summary = _TokenSummarySerializer(many=True)
    message = serializers.CharField()
    endpoints = _TokenRejectedEndpointSerializer(many=True)


class TokenQuoteResponseSerializer(serializers.Serializer):
    """The schema of a token quote (rendered by ``render_token_quote``)."""

    placements = _TokenPlacementSerializer(many=True)
    rejected = _TokenRejectedSerializer()


class TokenOfferSerializer(serializers.Serializer):
    endpoint = serializers.UUIDField(source="id")
    pool = serializers.UUIDField(source="pool_id")
    hub = serializers.CharField()
    region = serializers.CharField()
    model = serializers.CharField()
    throughput = serializers.IntegerField(help_text="Tokens per second: cards x throughput per card.")
    input_price_now = PriceField(help_text="CNY per million input tokens in this local hour.")
    output_price_now = PriceField(help_text="CNY per million output tokens in this local hour.")
    electricity_cost_per_million_tokens = PriceField(
        help_text="This hour's electricity cost per million tokens at full throughput."
    )
    latency_ms = serializers.IntegerField(allow_null=True)


class TokenOrderSerializer(serializers.ModelSerializer):
    endpoint = serializers.UUIDField(source="endpoint_id", read_only=True)
    model = serializers.CharField(source="endpoint.model", read_only=True)
    lease = serializers.UUIDField(source="pk", read_only=True, help_text="The `subject` of its usage events.")
    start_at = serializers.SerializerMethodField()
    end_at = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "endpoint",
            "model",
            "workload",
            "user_region",
            "input_tokens",
            "output_tokens",
            "deadline",
            "estimated_cost",
            "currency",
            "lease",
            "start_at",
            "end_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_start_at(self, order: Order) -> Any:
        return serializers.DateTimeField().to_representation(order.leases.get().start_at)

    def get_end_at(self, order: Order) -> Any:
        return serializers.DateTimeField().to_representation(order.leases.get().end_at)
