import uuid
from datetime import datetime
from decimal import Decimal

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from pools.tariffs import hour_prices, local_hour

MAX_POOL_CARDS = 100_000


class Hub(models.Model):
    """One of the 8 national hub nodes and the dispatch region it serves.

    ``tariff`` is the time-of-use electricity tariff in local time
    (Asia/Shanghai): ``{"bands": [{"band": "peak", "hours": [[10, 15]], "price": "1.01"}]}``
    in yuan per kWh, bands covering the 24 hours once. ``latency_ms`` maps a
    user region to the typical round trip from it to this hub.
    """

    class Region(models.TextChoices):
        EAST = "east", _("East")
        WEST = "west", _("West")
        ORBIT = "orbit", "Orbit"  # the space computing constellation: neither east nor west

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

    @property
    def local_name(self) -> str:
        """What a page calls the hub: its Chinese name to a reader of Chinese, where it has one."""
        return self.name_zh if self.name_zh and (get_language() or "").startswith("zh") else self.name


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


class ResourcePool(models.Model):
    """A provider's pool of GPU cards of one model in one hub.

    Capacity: ``reserved_cards`` are held by scheduled or running leases,
    ``healthy_cards`` come from the provider agent's heartbeats, and
    ``free_cards`` (computed by the database) is what new placements may take.
    Both counters change only under a row lock (see ``pools.services``).
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending approval")
        ACTIVE = "active", _("Active")
        SUSPENDED = "suspended", _("Suspended")
        RETIRED = "retired", _("Retired")

    class Interconnect(models.TextChoices):
        NVLINK = "nvlink", _("NVLink")
        INFINIBAND = "infiniband", _("InfiniBand")
        ROCE = "roce", _("RoCE")
        HCCS = "hccs", _("HCCS")
        ETHERNET = "ethernet", _("Ethernet")
        PCIE = "pcie", _("PCIe")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="pools")
    name = models.CharField(max_length=100)
    hub = models.ForeignKey(Hub, on_delete=models.PROTECT, related_name="pools")
    province = models.CharField(max_length=32)
    city = models.CharField(max_length=64, blank=True)
    gpu_model = models.ForeignKey(GpuModel, on_delete=models.PROTECT, related_name="pools")
    cards = models.PositiveIntegerField()
    pue = models.DecimalField(max_digits=4, decimal_places=2)
    green_share = models.DecimalField(max_digits=4, decimal_places=3)
    interconnect = models.CharField(max_length=16, choices=Interconnect.choices, default=Interconnect.ETHERNET)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_changed_at = models.DateTimeField(default=timezone.now)
    status_changed_by = models.CharField(max_length=200, blank=True)
    reserved_cards = models.PositiveIntegerField(default=0)
    healthy_cards = models.PositiveIntegerField()
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    free_cards = models.GeneratedField(
        expression=Greatest(F("healthy_cards") - F("reserved_cards"), Value(0)),
        output_field=models.IntegerField(),
        db_persist=True,
    )
    # The transaction (PostgreSQL xid) that last changed what the offers list shows of this pool
    # (set by ``pools.services.invalidate_offer_snapshot``); the offers snapshot reloads a pool
    # whose version it has not seen (``marketplace.offers``).
    offer_version = models.BigIntegerField(default=0, db_index=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["status", "gpu_model", "hub"], name="pool_offer_idx"),
            models.Index(fields=["provider", "status"], name="pool_provider_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cards__gte=1, cards__lte=MAX_POOL_CARDS), name="pool_cards_range"),
            models.CheckConstraint(condition=Q(reserved_cards__lte=F("cards")), name="pool_reserved_within_cards"),
            models.CheckConstraint(condition=Q(healthy_cards__lte=F("cards")), name="pool_healthy_within_cards"),
            models.CheckConstraint(condition=Q(pue__gte=1), name="pool_pue_at_least_one"),
            models.CheckConstraint(condition=Q(green_share__gte=0, green_share__lte=1), name="pool_green_share_range"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "active", "suspended", "retired"]), name="pool_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.hub_id}, {self.gpu_model_id} x{self.cards})"


class PricePlan(models.Model):
    """One version of a pool's prices, in force from ``effective_from`` until the next.

    ``hour_prices`` holds the price per card-hour for each local hour 0..23,
    derived once from the base price, the time-of-use factors and the hub's
    bands, so that offers and rating read a rate without recomputing it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey(ResourcePool, on_delete=models.CASCADE, related_name="price_plans")
    version = models.PositiveIntegerField()
    effective_from = models.DateTimeField(help_text="From when new orders are priced with this version.")
    running_from = models.DateTimeField(
        help_text="From when running leases pay it outside their price lock: effective_from, or for a rise "
        "not before PRICE_RISE_NOTICE_HOURS after it was made."
    )
    rise = models.BooleanField(
        default=False, help_text="Higher, in some hour or token price, than the version running leases paid."
    )
    price_per_card_hour = models.DecimalField(max_digits=12, decimal_places=4)
    currency = models.CharField(max_length=3, default="CNY")
    time_of_use = models.JSONField(help_text='Factor per band, e.g. {"peak": "1.05", "flat": "1", "valley": "0.9"}.')
    time_of_use_custom = models.BooleanField(
        default=False, help_text="Set by the provider; otherwise derived from the hub's tariff and kept so."
    )
    hour_prices = models.JSONField(help_text="Price per card-hour for each local hour 0..23.")
    reserved_discount = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=0,
        help_text="Off the hour prices for reserved (take-or-pay) bookings, e.g. 0.25: 25% off.",
    )
    token_prices = models.JSONField(
        default=dict, blank=True, help_text='Per million tokens: {"model": {"input": "2.00", "output": "8.00"}}.'
    )
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pool", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "version"], name="price_plan_version_unique"),
            models.UniqueConstraint(fields=["pool", "effective_from"], name="price_plan_effective_unique"),
            models.CheckConstraint(condition=Q(price_per_card_hour__gt=0), name="price_plan_price_positive"),
            models.CheckConstraint(
                condition=Q(reserved_discount__gte=0, reserved_discount__lt=1), name="price_plan_discount_range"
            ),
        ]
        indexes = [models.Index(fields=["pool", "-effective_from"], name="price_plan_lookup_idx")]

    def __str__(self) -> str:
        return f"{self.pool_id} v{self.version} from {self.effective_from:%Y-%m-%d %H:%M}"

    def rate_at(self, at: datetime) -> Decimal:
        """The price per card-hour in force at ``at`` under this plan."""
        return Decimal(self.hour_prices[local_hour(at)])

    def reserved_rate_at(self, at: datetime) -> Decimal:
        """The reserved price per card-hour at ``at``: the hour's price less the discount."""
        return self.rate_at(at) * (1 - self.reserved_discount)

    @property
    def average_price(self) -> Decimal:
        """The mean of its 24 hour prices: what an order's ``max_price`` (an average) is held against."""
        return sum((Decimal(price) for price in self.hour_prices), Decimal(0)) / 24

    def rises_from(self, other: "PricePlan") -> bool:
        """Higher than ``other`` in any hour (so any time-of-use band) or any token price."""
        if any(Decimal(new) > Decimal(old) for new, old in zip(self.hour_prices, other.hour_prices, strict=True)):
            return True
        return any(
            Decimal(price) > Decimal(other.token_prices.get(model, {}).get(side, "0"))
            for model, sides in self.token_prices.items()
            for side, price in sides.items()
        )

    def token_rate(self, model: str, side: str, band: str) -> Decimal:
        """The price per million ``side`` (input or output) tokens of ``model`` in a time-of-use
        band: the model's base price times the band's factor, as card-hours are priced."""
        base = Decimal(self.token_prices.get(model, {}).get(side, "0"))
        return hour_prices(base_price=base, factors=self.time_of_use, bands=[band])[0]


class PoolStatusChange(models.Model):
    pool = models.ForeignKey(ResourcePool, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=16, choices=ResourcePool.Status.choices)
    to_status = models.CharField(max_length=16, choices=ResourcePool.Status.choices)
    changed_by = models.CharField(max_length=200)
    reason = models.CharField(max_length=500, blank=True)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["changed_at"]

    def __str__(self) -> str:
        return f"{self.pool_id}: {self.from_status} -> {self.to_status}"


class Heartbeat(models.Model):
    """What a provider's agent reported, kept for the operations view of each pool."""

    id = models.BigAutoField(primary_key=True)
    pool = models.ForeignKey(ResourcePool, on_delete=models.CASCADE, related_name="heartbeats")
    healthy_cards = models.PositiveIntegerField()
    observed_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pool", "observed_at"], name="heartbeat_unique")]

    def __str__(self) -> str:
        return f"{self.pool_id} {self.healthy_cards} at {self.observed_at:%H:%M:%S}"


# A served model's name: lowercase letters, digits, dots, dashes and underscores (glm-4.5, qwen3-32b).
MODEL_NAME = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]*$", "Lowercase letters, digits, '.', '-' and '_', starting with a letter or digit."
)


class ModelEndpoint(models.Model):
    """A model a provider serves by the token on cards it dedicates from one of its pools.

    Its prices per million input and output tokens are the pool's price versions'
    ``token_prices[model]``, with the pool's time-of-use factors (``PricePlan.token_rate``):
    one versioning for cards and tokens. Approved by an operator as pools are; while
    active its ``cards`` are reserved on the pool, so no card lease can take them.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending approval")
        ACTIVE = "active", _("Active")
        SUSPENDED = "suspended", _("Suspended")
        RETIRED = "retired", _("Retired")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pool = models.ForeignKey(ResourcePool, on_delete=models.PROTECT, related_name="endpoints")
    model = models.CharField(
        max_length=64,
        validators=[MODEL_NAME],
        help_text="The model served, e.g. qwen3-32b, deepseek-v3 or glm-4.5.",
    )
    throughput_per_card = models.PositiveIntegerField(help_text="Tokens (input and output) per second per card.")
    cards = models.PositiveIntegerField(help_text="Cards of the pool dedicated to this endpoint.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_changed_at = models.DateTimeField(default=timezone.now)
    status_changed_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(cards__gte=1), name="endpoint_cards_positive"),
            models.CheckConstraint(condition=Q(throughput_per_card__gte=1), name="endpoint_throughput_positive"),
            models.UniqueConstraint(
                fields=["pool", "model"], condition=~Q(status="retired"), name="endpoint_one_per_pool_model"
            ),
        ]
        indexes = [models.Index(fields=["status", "model"], name="endpoint_offer_idx")]

    def __str__(self) -> str:
        return f"{self.model} on {self.pool_id} x{self.cards}"
