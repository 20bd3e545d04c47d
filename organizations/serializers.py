from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from core.serializers import StrictModelSerializer, StrictSerializer
from organizations.models import ApiKey, AuditEvent, InvoicingDetails, Organization
from organizations.validators import validate_credit_code


class OrganizationSerializer(StrictModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)  # type: ignore[assignment,var-annotated]

    class Meta:
        model = Organization
        fields = [
            "id",
            "kind",
            "slug",
            "legal_name",
            "credit_code",
            "province",
            "city",
            "is_sme",
            "parent",
            "created_at",
        ]
        read_only_fields = fields


class ApiKeySerializer(StrictModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "role", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=ApiKey.Role.choices, default=ApiKey.Role.MEMBER)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself. Shown only in this answer.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class AuditEventSerializer(StrictModelSerializer):
    summary = serializers.DictField(read_only=True, help_text="What changed: a small JSON object, amounts in yuan.")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "action",
            "target_type",
            "target_id",
            "organization_id",
            "summary",
            "actor",
            "actor_organization_id",
            "actor_api_key_prefix",
            "source",
            "ip",
            "user_agent",
            "request_id",
        ]
        read_only_fields = fields


class InvoicingDetailsSerializer(StrictSerializer):
    """What the buyer's fapiao carry. ``title`` and ``taxpayer_id`` are enough for an ordinary
    fapiao; a special one also needs ``address``, ``phone``, ``bank_name`` and ``bank_account``."""

    title = serializers.CharField(max_length=200, help_text=_("The legal name, as the fapiao's title (抬头)."))
    taxpayer_id = serializers.CharField(
        min_length=18,
        max_length=18,
        validators=[validate_credit_code],
        help_text=_("Unified social credit code (统一社会信用代码), 18 characters with its check character."),
    )
    address = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, default="", allow_blank=True)
    bank_name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    bank_account = serializers.CharField(max_length=40, required=False, default="", allow_blank=True)
    special_ready = serializers.BooleanField(
        read_only=True, help_text=_("Whether a special VAT fapiao can be requested with these details.")
    )
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = InvoicingDetails
