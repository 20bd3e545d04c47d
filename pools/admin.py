from django.contrib import admin

from pools.models import GpuModel, Heartbeat, Hub, PoolStatusChange, PricePlan, ResourcePool


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "region", "pue", "green_share"]
    list_filter = ["region"]
    search_fields = ["code", "name", "name_zh"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        from pools.services import invalidate_offer_snapshot

        super().save_model(request, obj, form, change)
        invalidate_offer_snapshot(*obj.pools.values_list("pk", flat=True))  # offers show its region and tariff


@admin.register(GpuModel)
class GpuModelAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "vendor", "memory_gb", "fp16_tflops", "power_watts"]
    list_filter = ["vendor"]
    search_fields = ["code", "name"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        from pools.services import invalidate_offer_snapshot

        super().save_model(request, obj, form, change)
        invalidate_offer_snapshot(*obj.pools.values_list("pk", flat=True))  # offers show its memory


class PricePlanInline(admin.TabularInline):
    model = PricePlan
    extra = 0
    fields = ("version", "effective_from", "price_per_card_hour", "time_of_use", "token_prices", "created_by")
    readonly_fields = fields
    can_delete = False
    ordering = ["-version"]

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # prices change through the provider's API, as a new version


class PoolStatusChangeInline(admin.TabularInline):
    model = PoolStatusChange
    extra = 0
    fields = ("changed_at", "from_status", "to_status", "changed_by", "reason")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ResourcePool)
class ResourcePoolAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "provider",
        "hub",
        "province",
        "gpu_model",
        "cards",
        "free_cards",
        "status",
        "last_heartbeat_at",
    ]
    list_filter = ["hub", "hub__region", "status", "gpu_model", "interconnect"]
    search_fields = ["name", "provider__slug", "provider__legal_name", "province", "city"]
    list_select_related = ["provider", "hub", "gpu_model"]
    readonly_fields = [
        "status",
        "status_changed_at",
        "status_changed_by",
        "reserved_cards",
        "healthy_cards",
        "free_cards",
        "last_heartbeat_at",
        "created_at",
    ]
    autocomplete_fields = ["provider"]
    inlines = [PricePlanInline, PoolStatusChangeInline]
    actions = ["approve", "suspend"]

    @admin.action(description="Approve the selected pools (pending or suspended)")
    def approve(self, request, queryset):  # type: ignore[no-untyped-def]
        self._transition(request, queryset, "pool_approve")

    @admin.action(description="Suspend the selected pools")
    def suspend(self, request, queryset):  # type: ignore[no-untyped-def]
        self._transition(request, queryset, "pool_suspend")

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        from pools.services import invalidate_offer_snapshot

        super().save_model(request, obj, form, change)
        invalidate_offer_snapshot(obj.pk)  # what the offers show may have changed

    def _transition(self, request, queryset, service_name):  # type: ignore[no-untyped-def]
        from core.exceptions import ApplicationError
        from pools import services

        done, refused = 0, []
        for pool in queryset.order_by("pk"):
            try:
                getattr(services, service_name)(pool=pool, by=f"admin:{request.user}", reason="admin action")
                done += 1
            except ApplicationError as exc:
                refused.append(f"{pool.name}: {exc.message}")
        self.message_user(request, f"{done} pools changed." + (f" Refused: {'; '.join(refused)}" if refused else ""))


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["pool", "healthy_cards", "observed_at", "received_at"]
    list_select_related = ["pool"]
    date_hierarchy = "observed_at"
