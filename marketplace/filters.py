from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext
from rest_framework.exceptions import ValidationError

from core.filters import IntegerFilter, OrderingFilter, StrictFilterSet
from marketplace.models import Lease
from pools.models import ResourcePool
from pools.reference_data import USER_REGIONS


class StableOrderingFilter(OrderingFilter):
    """Orders as asked, then by id, so that pages never shuffle between requests."""

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        qs = super().filter(qs, value)
        return qs.order_by(*qs.query.order_by, "pk") if value else qs


class OfferFilter(StrictFilterSet):
    gpu_model = django_filters.CharFilter(field_name="gpu_model_id", help_text="GPU model code, e.g. H100-80G.")
    hub = django_filters.CharFilter(field_name="hub_id", help_text="Hub code, e.g. ningxia.")
    region = django_filters.ChoiceFilter(field_name="hub__region", choices=[("east", "east"), ("west", "west")])
    province = django_filters.CharFilter(field_name="province")
    min_free_cards = IntegerFilter(field_name="free_cards", lookup_expr="gte", min_value=1)
    min_memory_gb = IntegerFilter(field_name="gpu_model__memory_gb", lookup_expr="gte")
    max_price = django_filters.NumberFilter(
        field_name="price_now", lookup_expr="lte", min_value=0, help_text="Highest price per card-hour now, CNY."
    )
    min_green_share = django_filters.NumberFilter(field_name="green_share", lookup_expr="gte", min_value=0, max_value=1)
    user_region = django_filters.ChoiceFilter(
        choices=[(region, region) for region in USER_REGIONS],
        method="filter_nothing",
        help_text="Where the users are: adds latency_ms and allows ordering by latency.",
    )
    ordering = StableOrderingFilter(
        fields=(
            ("price_now", "price"),
            ("green_share", "green_share"),
            ("latency_ms", "latency"),
            ("free_cards", "free_cards"),
        ),
        help_text=(
            "price, -price, green_share, -green_share, latency (needs user_region), free_cards; several keys "
            "comma-separated (`price,-green_share`) or repeated (`ordering=price&ordering=-green_share`), "
            "the first sorting first."
        ),
    )

    class Meta:
        model = ResourcePool
        fields: list[str] = []

    def filter_nothing(self, queryset: QuerySet[Any], name: str, value: Any) -> QuerySet[Any]:
        return queryset  # the view reads it to annotate latency_ms

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        self.check_ordering()
        return super().filter_queryset(queryset)

    def check_ordering(self) -> list[str]:
        """The ordering keys asked for (``price``, ``-latency``...); latency needs user_region."""
        ordering = self.form.cleaned_data.get("ordering") or []
        if any(field.lstrip("-") == "latency" for field in ordering) and not self.form.cleaned_data.get("user_region"):
            raise ValidationError(
                {
                    "ordering": [
                        gettext("Ordering by latency needs user_region, e.g. ?user_region=shanghai&ordering=latency.")
                    ]
                },
                code="user_region_required",
            )
        return list(ordering)


class LeaseFilter(StrictFilterSet):
    # By id, not by a choice of existing rows: an unknown or another tenant's id finds nothing,
    # and says nothing about whether it exists.
    status = django_filters.ChoiceFilter(choices=Lease.Status.choices)
    pool = django_filters.UUIDFilter(field_name="pool_id")
    order = django_filters.UUIDFilter(field_name="order_id")

    class Meta:
        model = Lease
        fields: list[str] = []
