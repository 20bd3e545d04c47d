from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from django.utils import translation
from rest_framework import serializers

from core.serializers import FieldsBuiltOnceSerializer, PriceField, StrictSerializer


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


class _Body(FieldsBuiltOnceSerializer):
    kind = serializers.ChoiceField(choices=["gpu", "cpu"])
    cards = serializers.IntegerField(min_value=1)


def test_a_body_built_once_says_an_invalid_choice_in_each_requests_language() -> None:
    with translation.override("zh-hans"):
        chinese = _Body(data={"kind": "tpu", "cards": 1})
        assert not chinese.is_valid()
    with translation.override("en"):
        english = _Body(data={"kind": "tpu", "cards": 1})
        assert not english.is_valid()

    assert english.errors["kind"] == ['"tpu" is not a valid choice; kind must be one of: gpu, cpu.']
    assert chinese.errors["kind"] == ['"tpu" is not a valid choice; kind 必须是以下之一：gpu, cpu.']


def test_bodies_built_once_share_their_fields_but_not_what_they_found() -> None:
    first, second = _Body(data={"kind": "gpu", "cards": 0}), _Body(data={"kind": "cpu", "cards": 2})

    assert not first.is_valid() and second.is_valid()
    assert first.fields is second.fields
    assert set(first.errors) == {"cards"} and first.errors["cards"][0].code == "min_value"
    assert second.validated_data == {"kind": "cpu", "cards": 2}
    assert not _Body(data={"kind": "gpu", "cards": 1, "card": 1}).is_valid()  # still strict


def test_bodies_built_once_are_checked_alike_on_many_threads_at_once() -> None:
    def check(n: int) -> tuple[bool, Any]:
        body = _Body(data={"kind": "gpu", "cards": n % 3})  # 0 is refused
        valid = body.is_valid()
        return valid, (body.validated_data["cards"] if valid else body.errors["cards"][0].code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(check, range(2000)))

    assert results == [(False, "min_value") if n % 3 == 0 else (True, n % 3) for n in range(2000)]
