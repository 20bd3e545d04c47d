"""Filters that refuse what they cannot read instead of ignoring it.

django-filter takes an empty value (``?status=``) as no filter at all: a client that
sends ``?occurred_after=`` by mistake would get the whole list. Every parameter except
a free-text one must have a value when it is given.
"""

from datetime import UTC
from typing import Any

import django_filters
from django import forms
from django.utils.translation import gettext
from django_filters import utils
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

from core.serializers import valid_choices
from core.timezones import datetime_problem


class IntegerFilter(django_filters.NumberFilter):
    """A whole number (NumberFilter would take 0.5 for a count of cards or gigabytes)."""

    field_class = forms.IntegerField


# A decimal parameter has at most this many digits, and places: `1e-999999` overflowed PostgreSQL's numeric.
FILTER_MAX_DIGITS = 24
FILTER_DECIMAL_PLACES = 10


def _datetime_in_range(value: Any) -> None:
    if value is not None and (problem := datetime_problem(value)):
        raise forms.ValidationError(problem, code="datetime_out_of_range")


class _UtcIsoDateTimeField(IsoDateTimeField):
    default_validators = [_datetime_in_range]


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time within the range the API takes (``core.timezones``), compared in UTC
    (PostgreSQL refuses offsets beyond 15:59)."""

    field_class = _UtcIsoDateTimeField

    def filter(self, qs: Any, value: Any) -> Any:
        return super().filter(qs, value.astimezone(UTC) if value is not None else None)


class _RepeatableCSVWidget(django_filters.widgets.CSVWidget):
    """``?ordering=price,-green_share`` and ``?ordering=price&ordering=-green_share`` alike: every
    value given counts (Django's QueryDict.get would keep only the last)."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        values = data.getlist(name) if hasattr(data, "getlist") else []
        if len(values) > 1:
            return [part for value in values for part in value.split(",")]
        return super().value_from_datadict(data, files, name)


class OrderingFilter(django_filters.OrderingFilter):
    """Ordering by every key given, comma-separated or repeated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", _RepeatableCSVWidget)
        super().__init__(*args, **kwargs)


class StrictFilterSet(django_filters.FilterSet):
    @classmethod
    def get_filters(cls) -> Any:
        # When the class is made, before anything builds (and caches) a filter's form field: the
        # schema reads the fields of the class's own filters, which each request's filters copy.
        filters = super().get_filters()
        for name, filter_ in filters.items():
            if isinstance(filter_, django_filters.ChoiceFilter):
                # An invalid choice names the valid ones (Django's message only quotes the value given).
                values = [value for value, _ in filter_.extra["choices"] if value != ""]
                text = valid_choices(name, values).replace("%", "%%")  # for Django's %-formatting
                filter_.extra["error_messages"] = {"invalid_choice": f"%(value)s is not a valid choice; {text}."}
            elif issubclass(filter_.field_class, forms.DecimalField):  # a NumberFilter's field: bounded
                filter_.extra.setdefault("max_digits", FILTER_MAX_DIGITS)
                filter_.extra.setdefault("decimal_places", FILTER_DECIMAL_PLACES)
        return filters

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name, filter_ in self.filters.items():
            free_text = type(filter_) is django_filters.CharFilter
            if not free_text and name in self.data and self.data.get(name) == "":
                self.form.add_error(
                    name, forms.ValidationError(gettext("Give a value, or leave the parameter out."), code="blank")
                )
                valid = False
        return valid


class StrictFilterBackend(DjangoFilterBackend):
    """The default filter backend: views' ``filterset_fields`` make a ``StrictFilterSet``, and a
    list refuses query parameters it does not know (``?staus=placed`` is not the whole list)."""

    filterset_base = StrictFilterSet

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        self._refuse_unknown(request, queryset, view)
        return super().filter_queryset(request, queryset, view)

    def valid_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        """The view's filterset, checked as ``filter_queryset`` checks it (the same 400s), for a
        view that applies the cleaned values itself."""
        self._refuse_unknown(request, queryset, view)
        filterset = self.get_filterset(request, queryset, view)
        if not filterset.is_valid():
            raise utils.translate_validation(filterset.errors)
        return filterset

    def _refuse_unknown(self, request: Any, queryset: Any, view: Any) -> None:
        filterset_class = self.get_filterset_class(view, queryset)
        known = set(filterset_class.base_filters) if filterset_class else set()
        paginator = getattr(view, "paginator", None)
        if paginator is not None:
            known |= {paginator.page_query_param, paginator.page_size_query_param}
        refuse_unknown_parameters(request, known)

    def get_filterset_class(self, view: Any, queryset: Any = None) -> Any:
        filterset_class = super().get_filterset_class(view, queryset)
        if filterset_class is not None and not issubclass(filterset_class, StrictFilterSet):
            raise TypeError(f"{view.__class__.__name__}.filterset_class must be a core.filters.StrictFilterSet.")
        return filterset_class


def refuse_unknown_parameters(request: Any, known: set[str]) -> None:
    """A 400 naming each query parameter that is not in ``known``."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        message = f"Unknown query parameter. Known: {', '.join(sorted(known)) or 'none'}."
        raise ValidationError({name or "(empty name)": [message] for name in unknown}, code="unknown_parameter")
