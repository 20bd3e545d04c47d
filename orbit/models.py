import uuid

from django.db import models
from django.db.models import Q


class Satellite(models.Model):
    """A computing satellite: a resource pool of the ``orbit`` hub (its on-board computer is
    the pool's one card), with its orbital elements and its storage and link rates."""

    pool = models.OneToOneField(
        "pools.ResourcePool", on_delete=models.PROTECT, primary_key=True, related_name="satellite"
    )
    norad_id = models.PositiveIntegerField(unique=True)
    plane_slot = models.PositiveSmallIntegerField(help_text="Its place in the plane: neighbours are one slot apart.")
    tle_line1 = models.CharField(max_length=69)
    tle_line2 = models.CharField(max_length=69)
    process_gb_per_hour = models.DecimalField(max_digits=10, decimal_places=2)
    storage_gb = models.PositiveIntegerField()
    downlink_mbps = models.PositiveIntegerField()
    isl_mbps = models.PositiveIntegerField()
    downlink_price_per_gb = models.DecimalField(max_digits=12, decimal_places=4)

    class Meta:
        ordering = ["plane_slot"]
        constraints = [
            models.CheckConstraint(condition=Q(process_gb_per_hour__gt=0), name="satellite_process_positive"),
            models.CheckConstraint(condition=Q(downlink_mbps__gt=0, isl_mbps__gt=0), name="satellite_links_positive"),
        ]

    def __str__(self) -> str:
        return f"satellite {self.norad_id}"


class Dataset(models.Model):
    """Data a provider's satellite captured for a buyer and holds, registered by its agent after the capture."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="datasets")
    buyer = models.ForeignKey(
        "organizations.Organization", on_delete=models.PROTECT, related_name="orbit_datasets", help_text="Whose data."
    )
    satellite = models.ForeignKey(Satellite, on_delete=models.PROTECT, related_name="datasets")
    size_gb = models.DecimalField(max_digits=10, decimal_places=3)
    captured_at = models.DateTimeField()
    region = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["provider", "-created_at"], name="dataset_provider_idx"),
            models.Index(fields=["buyer", "-created_at"], name="dataset_buyer_idx"),
        ]
        constraints = [models.CheckConstraint(condition=Q(size_gb__gt=0), name="dataset_size_positive")]

    def __str__(self) -> str:
        return f"dataset {self.pk} ({self.size_gb} GB on {self.satellite_id})"
