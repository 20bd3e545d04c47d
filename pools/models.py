from django.db import models


class Hub(models.Model):
    """One of the 8 national hub nodes and the dispatch region it serves.

    ``tariff`` is the time-of-use electricity tariff in local time
    (Asia/Shanghai): ``{"bands": [{"band": "peak", "hours": [[10, 15]], "price": "1.01"}]}``
    in yuan per kWh, bands covering the 24 hours once. ``latency_ms`` maps a
    user region to the typical round trip from it to this hub.
    """

    class Region(models.TextChoices):
        EAST = "east", "East"
        WEST = "west", "West"

    code = models.SlugField(max_length=32, primary_key=True)
    name = models.CharField(max_length=100)
    name_zh = models.CharField(max_length=50, blank=True)
    region = models.CharField(max_length=8, choices=Region.choices)
    cluster = models.CharField(max_length=200, blank=True)
    provinces = models.JSONField(default=list, help_text="Provinces whose compute is dispatched to this hub.")
    hub_provinces = models.JSONField(default=list, help_text="Provinces the hub itself lies in.")
    tariff = models.JSONField()
    pue = models.DecimalField(max_digits=4, decimal_places=2)
    green_share = models.DecimalField(max_digits=4, decimal_places=3)
    latency_ms = models.JSONField(default=dict)

    class Meta:
        ordering = ["region", "code"]

    def __str__(self) -> str:
        return self.name


class GpuModel(models.Model):
    code = models.SlugField(max_length=32, primary_key=True)
    name = models.CharField(max_length=100)
    vendor = models.CharField(max_length=50)
    memory_gb = models.PositiveIntegerField()
    fp16_tflops = models.DecimalField(max_digits=8, decimal_places=1, help_text="Dense FP16/BF16 tensor TFLOPS.")
    power_watts = models.PositiveIntegerField()

    class Meta:
        ordering = ["code"]
        verbose_name = "GPU model"

    def __str__(self) -> str:
        return self.code
