from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext
from rest_framework import serializers

from core.serializers import StrictSerializer
from orbit.models import Dataset

MAX_CONTACT_SPAN = timedelta(days=7)
DEFAULT_CONTACT_SPAN = timedelta(days=1)


class ContactQuerySerializer(StrictSerializer):
    # ``from`` is a Python keyword: the field is declared under it below.
    to = serializers.DateTimeField(required=False, help_text="End of the window; `from` plus a day by default.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(required=False, help_text="Start of the window; now by default.")
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start = attrs.get("from") or self.context["now"]
        end = attrs.get("to") or start + DEFAULT_CONTACT_SPAN
        if end <= start:
            raise serializers.ValidationError({"to": [gettext("'to' must be after 'from'.")]})
        if end - start > MAX_CONTACT_SPAN:
            raise serializers.ValidationError(
                {"to": [gettext("At most 7 days after 'from'; ask for the rest separately.")]}
            )
        return {"start": start, "end": end}


class ContactSerializer(serializers.Serializer):
    station = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    max_elevation = serializers.FloatField(help_text="Degrees above the horizon at the pass's highest point.")


class ContactListSerializer(serializers.Serializer):
    pool = serializers.UUIDField()
    norad_id = serializers.IntegerField()
    start = serializers.DateTimeField(source="from")
    end = serializers.DateTimeField(source="to")
    contacts = ContactSerializer(many=True)


class DatasetCreateSerializer(StrictSerializer):
    buyer = serializers.SlugField(max_length=50, help_text="The slug of the buyer whose data this is.")
    satellite = serializers.UUIDField(help_text="The pool id of your satellite that holds the data.")
    size_gb = serializers.DecimalField(
        max_digits=10, decimal_places=3, min_value=Decimal("0.001"), max_value=Decimal(1_000_000)
    )
    captured_at = serializers.DateTimeField()
    region = serializers.CharField(max_length=100, min_length=1)


class DatasetSerializer(serializers.ModelSerializer):
    satellite = serializers.UUIDField(source="satellite_id")
    provider = serializers.CharField(source="provider.slug")
    buyer = serializers.CharField(source="buyer.slug")

    class Meta:
        model = Dataset
        fields = ["id", "provider", "buyer", "satellite", "size_gb", "captured_at", "region", "created_at"]
        read_only_fields = fields
