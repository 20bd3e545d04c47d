from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.utils import translation
from django.utils.functional import cached_property
from django.utils.translation import gettext, gettext_lazy
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from core.money import PRICE_PLACES, estimate_in_yuan, fen_to_yuan, shown_price, yuan_to_fen
from core.timezones import datetime_problem

# The JSON type each kind of field takes, as the schema says: DRF alone would also take
# 8 for "8", "8" for 8 and 1 for true, so a request could mean something else than it says.
_JSON_TYPES: list[tuple[type[serializers.Field], tuple[type, ...], Any]] = [
    (serializers.BooleanField, (bool,), gettext_lazy("Must be a boolean.")),
    (serializers.IntegerField, (int,), gettext_lazy("Must be an integer.")),
    (serializers.FloatField, (int, float), gettext_lazy("Must be a number.")),
    (serializers.DecimalField, (str,), gettext_lazy('Must be a decimal string such as "15000.00".')),
    (serializers.ChoiceField, (str,), gettext_lazy("Must be a string.")),
    (serializers.CharField, (str,), gettext_lazy("Must be a string.")),
    (serializers.DateTimeField, (str,), gettext_lazy("Must be an ISO 8601 date-time string.")),
    (serializers.ListField, (list,), gettext_lazy("Must be a list.")),
]


def json_type_error(field: serializers.Field, value: Any) -> str | None:
    """What the value should have been, if its JSON type is wrong for the field."""
    if value is None:
        return None
    for field_class, types, message in _JSON_TYPES:
        if isinstance(field, field_class):
            if isinstance(value, bool) and bool not in types:
                return str(message)
            # DRF would take a blank decimal string for null.
            blank = isinstance(field, serializers.DecimalField) and isinstance(value, str) and not value.strip()
            return None if isinstance(value, types) and not blank else str(message)
    return None


def _empty_error(field: serializers.Field, value: Any) -> str | None:
    """DRF takes ``?to=`` as no ``to`` at all; a parameter given must have a value."""
    if value == "" and not getattr(field, "allow_blank", False):
        return gettext("Give a value, or leave the parameter out.")
    return None


def valid_choices(name: str, values: Iterable[Any]) -> str:
    """What an ``invalid_choice`` error says: ``workload must be one of: realtime_inference, training``.

    Said by the request bodies' choice fields (``StrictSerializerMixin``) and the lists'
    choice filters (``core.filters.StrictFilterSet``), so a client learns the valid values
    from the error itself."""
    return gettext("%(name)s must be one of: %(values)s") % {
        "name": name,
        "values": ", ".join(str(value) for value in values),
    }


def _datetime_in_range(value: datetime) -> None:
    """A date-time the service can compute with (``core.timezones.datetime_problem``): a day before
    0001-01-01 or after 9999-12-31 was an OverflowError, a 500."""
    if problem := datetime_problem(value):
        raise serializers.ValidationError(problem, code="datetime_out_of_range")


def _say_choices(name: str, field: serializers.Field) -> None:
    """Make an invalid choice name the valid ones (DRF's message only quotes the value given)."""
    if isinstance(field, serializers.ChoiceField):
        text = valid_choices(name, field.choices).replace("{", "{{").replace("}", "}}")  # for str.format
        field.error_messages["invalid_choice"] = '"{input}" is not a valid choice; ' + text + "."
    elif isinstance(field, serializers.ListField | serializers.DictField) and field.child is not None:
        _say_choices(name, field.child)


class StrictSerializerMixin:
    """Refuse fields the serializer does not know, instead of silently ignoring them,
    and values of another JSON type than the field's.

    A typo such as ``{"card": 8}`` must not be taken as a request without cards. An invalid
    choice says which values are valid. A date-time must be one the service can compute with.

    ``rules``: the rules that span fields, ``{code: what it says}``; a request breaking one is
    refused with that code, and core.schema writes them into the body's description.
    """

    rules: ClassVar[dict[str, str]] = {}

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()  # type: ignore[misc]
        for name, field in fields.items():
            _say_choices(name, field)
            if isinstance(field, serializers.DateTimeField) and not field.read_only:
                field.validators.append(_datetime_in_range)
        return fields  # type: ignore[no-any-return]

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(self.fields)  # type: ignore[attr-defined]
            unknown = sorted(set(data) - known)
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [
                            serializers.ErrorDetail(
                                gettext("Unknown field. Known fields: %(known)s.")
                                % {"known": ", ".join(sorted(known))},
                                code="unknown_field",
                            )
                        ]
                        for name in unknown
                    }
                )
            query = hasattr(data, "getlist")  # query parameters: every value is a string
            wrong = {
                name: message
                for name, field in self.fields.items()  # type: ignore[attr-defined]
                if name in data
                and not field.read_only
                and (message := _empty_error(field, data[name]) if query else json_type_error(field, data[name]))
            }
            if wrong:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail(message, code="invalid_type")] for name, message in wrong.items()}
                )
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


# The fields of each FieldsBuiltOnceSerializer, by class and language (an invalid choice's
# message is translated when its field is built, in _say_choices).
_FIELDS_BUILT: dict[tuple[type, str | None], BindingDict] = {}


class FieldsBuiltOnceSerializer(StrictSerializer):
    """Fields built once per process and language, shared by every instance, not deep-copied
    from the declared ones for each (DRF's way: about a millisecond for an order's body).

    Only for a request body's serializer whose fields read no context, are not changed after
    ``get_fields`` and keep nothing between two validations (DRF's fields keep nothing: what a
    validation finds is kept on the serializer), so that threads may share them. Every
    instance's fields are bound to one template instance, not to itself: their ``root`` is the
    template, with no context and not ``partial``."""

    @cached_property
    def fields(self) -> BindingDict:  # type: ignore[override]  # a cached_property too
        key = (type(self), translation.get_language())
        fields = _FIELDS_BUILT.get(key)
        if fields is None:
            template = type(self)()
            fields = BindingDict(template)
            for name, field in template.get_fields().items():
                fields[name] = field
            fields = _FIELDS_BUILT.setdefault(key, fields)
        return fields


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


class EstimateField(serializers.DecimalField):
    """An estimated amount in yuan, kept exact (4 places) inside: shown to the fen, rounded as
    invoices round (``core.money.round_to_fen``), so an order shows what its quote showed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=18, decimal_places=2, coerce_to_string=True, read_only=True, **kwargs)

    def to_representation(self, value: Any) -> str:
        return str(estimate_in_yuan(value))


class CurrencyField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("default", settings.DEFAULT_CURRENCY)
        super().__init__(choices=[settings.DEFAULT_CURRENCY], **kwargs)


class PriceField(serializers.DecimalField):
    """A price in yuan per card-hour or per million tokens: a decimal string with 4 places on the
    wire (``"12.3457"``), rounded half up for output only (``core.money.shown_price``); rates stay
    exact inside and in the database. As input it refuses more than 4 places (a 400): the price
    a provider sets is the price buyers see and usage is rated at, never silently rounded."""

    default_error_messages = {
        "max_decimal_places": gettext_lazy("Prices have at most {max_decimal_places} decimal places.")
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 16)
        super().__init__(decimal_places=PRICE_PLACES, coerce_to_string=True, **kwargs)

    def to_representation(self, value: Any) -> str:
        return f"{shown_price(value):f}"
