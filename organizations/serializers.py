from rest_framework import serializers

from core.serializers import StrictModelSerializer, StrictSerializer
from organizations.models import ApiKey, AuditEvent, Organization


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
