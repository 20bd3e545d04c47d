from decimal import Decimal

from rest_framework import serializers

from core.serializers import PriceField, StrictSerializer


class _Priced(StrictSerializer):
    price = PriceField(max_digits=12, min_value=Decimal("0.0001"))


def test_a_price_is_shown_with_four_places_rounded_half_up_and_never_changed_inside() -> None:
    exact = Decimal("12.3456500000")

    assert PriceField().to_representation(exact) == "12.3457"
    assert exact == Decimal("12.34565")


def test_a_price_given_with_four_places_is_taken_as_given() -> None:
    body = _Priced(data={"price": "12.3457"})

    assert body.is_valid(), body.errors
    assert body.validated_data["price"] == Decimal("12.3457")


def test_a_price_given_with_more_than_four_places_is_refused_not_rounded() -> None:
    body = _Priced(data={"price": "12.34565"})

    assert not body.is_valid()
    (error,) = body.errors["price"]
    assert isinstance(error, serializers.ErrorDetail)
    assert (error.code, str(error)) == ("max_decimal_places", "Prices have at most 4 decimal places.")
