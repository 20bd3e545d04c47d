from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from core.exceptions import RuleViolation
from organizations.models import ApiKey, AuditEvent, MemberProfile, Membership, Organization
from organizations.services import api_key_cap_check, api_key_create, api_key_revoke


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "legal_name", "kind", "province", "city", "is_sme", "is_active", "created_at"]
    list_filter = ["kind", "province", "is_sme", "is_active"]
    search_fields = ["slug", "legal_name", "credit_code"]
    autocomplete_fields = ["parent"]
    inlines = [MembershipInline]


class ApiKeyForm(forms.ModelForm):
    def clean(self):  # type: ignore[no-untyped-def]
        cleaned = super().clean() or {}
        organization = cleaned.get("organization")
        if self.instance._state.adding and organization is not None:
            try:  # said on the form; api_key_create checks again with the organization locked
                api_key_cap_check(organization=organization)
            except RuleViolation as refused:
                raise forms.ValidationError(refused.message, code=refused.code) from None
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "organization", "role", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["role", "organization__kind"]
    search_fields = ["name", "prefix", "organization__slug"]
    readonly_fields = ["prefix", "secret_hash", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]
    fields = ["organization", "name", "role", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    autocomplete_fields = ["organization"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:  # type: ignore[no-untyped-def]
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, raw_key = api_key_create(
            organization=obj.organization, name=obj.name, role=obj.role, created_by=f"admin:{request.user}"
        )
        obj.pk = api_key.pk
        messages.warning(request, f"The new key, shown only now: {raw_key}")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        for api_key in queryset.filter(revoked_at__isnull=True).select_related("organization"):
            api_key_revoke(organization=api_key.organization, key_id=api_key.pk, by=f"admin:{request.user}")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization__kind"]
    autocomplete_fields = ["user", "organization"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read only: the trail is append-only (the database refuses UPDATE and DELETE too)."""

    list_display = ["occurred_at", "action", "target_type", "target_id", "organization_id", "actor", "source", "ip"]
    list_filter = ["action", "target_type", "source"]
    search_fields = ["target_id", "actor", "request_id"]
    date_hierarchy = "occurred_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(MemberProfile)
class MemberProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "language"]
    list_filter = ["language"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
