from django.contrib import admin, messages
from django.http import HttpRequest

from organizations.models import ApiKey, Membership, Organization
from organizations.services import api_key_create


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


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "role", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["role", "organization__kind"]
    search_fields = ["name", "prefix", "organization__slug"]
    readonly_fields = ["prefix", "secret_hash", "created_by", "created_at", "last_used_at"]
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


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization__kind"]
    autocomplete_fields = ["user", "organization"]
