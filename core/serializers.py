from typing import Any

from django.conf import settings
from rest_framework import serializers

from core.money import fen_to_yuan, yuan_to_fen


class StrictSerializerMixin:
    """Refuse fields the serializer does not know, instead of silently ignoring them.

    A typo such as ``{"card": 8}`` must not be taken as a request without cards.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(self.fields)  # type: ignore[attr-defined]
            unknown = sorted(set(data) - known)
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [
                            serializers.ErrorDetail(
                                f"Unknown field. Known fields: {', '.join(sorted(known))}.",
                                code="unknown_field",
                            )
                        ]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class StrictModelSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    pass


class MoneyField(serializers.DecimalField):
    """Yuan as a decimal string on the wire (``"15000.00"``), integer fen inside."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 15)
        kwargs.setdefault("decimal_places", 2)
        super().__init__(coerce_to_string=True, **kwargs)

    def to_internal_value(self, data: Any) -> int:  # type: ignore[override]
        return yuan_to_fen(super().to_internal_value(data))

    def to_representation(self, value: int) -> str:  # type: ignore[override]
        return str(fen_to_yuan(value))


class CurrencyField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("default", settings.DEFAULT_CURRENCY)
        super().__init__(choices=[settings.DEFAULT_CURRENCY], **kwargs)
