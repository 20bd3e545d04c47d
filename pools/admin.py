from django.contrib import admin

from pools.models import GpuModel, Hub


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "region", "pue", "green_share"]
    list_filter = ["region"]
    search_fields = ["code", "name", "name_zh"]


@admin.register(GpuModel)
class GpuModelAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "vendor", "memory_gb", "fp16_tflops", "power_watts"]
    list_filter = ["vendor"]
    search_fields = ["code", "name"]
