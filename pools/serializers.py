from rest_framework import serializers

from pools.models import GpuModel, Hub


class HubSerializer(serializers.ModelSerializer):
    electricity = serializers.JSONField(source="tariff", help_text="Time-of-use tariff, yuan per kWh, local time.")

    class Meta:
        model = Hub
        fields = [
            "code",
            "name",
            "name_zh",
            "region",
            "cluster",
            "provinces",
            "electricity",
            "pue",
            "green_share",
            "latency_ms",
        ]


class GpuModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuModel
        fields = ["code", "name", "vendor", "memory_gb", "fp16_tflops", "power_watts"]
