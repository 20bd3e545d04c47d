import uuid

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Workload(models.TextChoices):
    REALTIME_INFERENCE = "realtime_inference", _("Real-time inference")
    BATCH_INFERENCE = "batch_inference", _("Batch inference")
    TRAINING = "training", _("Training")


class Commitment(models.TextChoices):
    ON_DEMAND = "on_demand", "On demand: the usage metered is billed"
    RESERVED = "reserved", "Reserved: every booked card-hour is billed, used or not, at the reserved price"


class Order(models.Model):
    """A buyer's requirements, placed by the dispatcher on one pool or, split, on several of one hub."""

    class Status(models.TextChoices):
        PLACED = "placed", _("Placed")
        CANCELLED = "cancelled", _("Cancelled")
        ENDED = "ended", _("Ended")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLACED)
    gpu_model = models.ForeignKey("pools.GpuModel", null=True, blank=True, on_delete=models.PROTECT)
    min_memory_gb = models.PositiveIntegerField(null=True, blank=True)
    cards = models.PositiveIntegerField()
    workload = models.CharField(max_length=32, choices=Workload.choices)
    user_region = models.CharField(max_length=32, blank=True)
    max_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_hours = models.DecimalField(max_digits=8, decimal_places=2)
    earliest_start = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    max_price = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    min_green_share = models.DecimalField(max_digits=4, decimal_places=3, null=True, blank=True)
    allowed_hubs = models.JSONField(default=list, blank=True)
    split = models.BooleanField(default=False)
    commitment = models.CharField(max_length=16, choices=Commitment.choices, default=Commitment.ON_DEMAND)
    pool = models.ForeignKey(
        "pools.ResourcePool",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The offer the buyer chose, if it chose one: the order is placed on this pool only.",
    )
    endpoint = models.ForeignKey(
        "pools.ModelEndpoint",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="orders",
        help_text="A token order's model endpoint; its lease bills tokens only.",
    )
    input_tokens = models.BigIntegerField(null=True, blank=True, help_text="A token order's expected input tokens.")
    output_tokens = models.BigIntegerField(null=True, blank=True, help_text="A token order's expected output tokens.")
    estimated_cost = models.DecimalField(max_digits=18, decimal_places=4)
    currency = models.CharField(max_length=3, default="CNY")
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["buyer", "-created_at"], name="order_buyer_idx")]
        constraints = [models.CheckConstraint(condition=Q(cards__gte=1), name="order_cards_positive")]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.cards} cards, {self.workload})"


class Lease(models.Model):
    """Cards of one pool held for one order from ``start_at`` to ``end_at``: the booked end
    (``price_locked_until``), or later once the buyer extended it (``lease_extend``).

    The cards are reserved on the pool from placement until the lease ends;
    they are released exactly once, by the one transition out of an active
    status (see ``marketplace.services.lease_end``).
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        RUNNING = "running", _("Running")
        COMPLETED = "completed", _("Completed")
        CANCELLED = "cancelled", _("Cancelled")
        PREEMPTED = "preempted", _("Preempted")
        FAILED = "failed", _("Failed")

    ACTIVE = (Status.SCHEDULED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="leases")
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="leases")
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="provided_leases")
    pool = models.ForeignKey("pools.ResourcePool", on_delete=models.PROTECT, related_name="leases")
    endpoint = models.ForeignKey(
        "pools.ModelEndpoint",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="leases",
        help_text=(
            "Set on a token order's lease: it bills tokens of the endpoint's model only, and holds no cards of "
            "its own (the endpoint's are reserved). A card lease bills card-seconds only."
        ),
    )
    cards = models.PositiveIntegerField()
    workload = models.CharField(max_length=32, choices=Workload.choices)
    commitment = models.CharField(
        max_length=16,
        choices=Commitment.choices,
        default=Commitment.ON_DEMAND,
        help_text="reserved: its booked card-hours are billed whether used or not (take-or-pay).",
    )
    holding = models.BooleanField(
        default=True,
        help_text=(
            "Its cards count in the pool's reserved cards. A deferred lease holds them from its start "
            "(the capacity calendar keeps them for it); a lease on deposited cards never does."
        ),
    )
    deposit = models.ForeignKey(
        "CapacityDeposit",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="resales",
        help_text="Set on a lease placed on deposited cards (bank capacity): its revenue goes to the depositor.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    start_at = models.DateTimeField(help_text="When the lease is booked to start.")
    end_at = models.DateTimeField(help_text="When the lease ends: its booked end, or later if the buyer extended it.")
    price_locked_until = models.DateTimeField(
        help_text="The booked end: usage before this is billed with price_plan; an extension's hours are not locked."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=64, blank=True)
    ended_by = models.CharField(max_length=200, blank=True)
    estimated_cost = models.DecimalField(max_digits=18, decimal_places=4)
    price_plan = models.ForeignKey(
        "pools.PricePlan",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The price version the lease was placed on: its booked hours are billed with it.",
    )
    max_price = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="The buyer's ceiling per card-hour: a rise above it ends the lease (price_above_max).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["buyer", "-created_at"], name="lease_buyer_idx"),
            models.Index(fields=["provider", "-created_at"], name="lease_provider_idx"),
            models.Index(fields=["status", "start_at"], name="lease_due_idx"),
            models.Index(fields=["pool", "status"], name="lease_pool_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cards__gte=1), name="lease_cards_positive"),
            models.CheckConstraint(condition=Q(end_at__gt=models.F("start_at")), name="lease_ends_after_start"),
            models.CheckConstraint(
                condition=Q(price_locked_until__gte=models.F("start_at"), price_locked_until__lte=models.F("end_at")),
                name="lease_lock_within_run",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["scheduled", "running"], ended_at__isnull=True)
                | Q(status__in=["completed", "cancelled", "preempted", "failed"], ended_at__isnull=False),
                name="lease_ended_at_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.cards} x {self.pool_id}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class CapacityDeposit(models.Model):
    """Card-hours of a reserved lease its holder will not use, back on the market at the lease's pool
    (bank capacity) from ``start_at`` to ``end_at``: whole hours up to the booking's end. The holder
    keeps paying its reservation; each card-hour another buyer uses earns it bank credit once, at the
    reseller's invoice (``billing.reservations``). A withdrawal moves ``end_at`` back to the hours
    resold or sold already."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lease = models.ForeignKey(Lease, on_delete=models.PROTECT, related_name="deposits")
    depositor = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    pool = models.ForeignKey("pools.ResourcePool", on_delete=models.PROTECT, related_name="+")
    cards = models.PositiveIntegerField()
    start_at = models.DateTimeField()
    end_at = models.DateTimeField()
    deposited_until = models.DateTimeField(help_text="The end as deposited, before any withdrawal.")
    price = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Price per card-hour the depositor set, lower than the pool's; null: the pool's on-demand price.",
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["depositor", "-created_at"], name="deposit_depositor_idx"),
            models.Index(fields=["pool", "end_at"], name="deposit_pool_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cards__gte=1), name="deposit_cards_positive"),
            models.CheckConstraint(condition=Q(end_at__gte=models.F("start_at")), name="deposit_ends_after_start"),
            models.CheckConstraint(condition=Q(price__isnull=True) | Q(price__gt=0), name="deposit_price_positive"),
        ]

    def __str__(self) -> str:
        return f"deposit {self.pk} ({self.cards} cards of {self.lease_id})"


class OrbitOrder(models.Model):
    """An order to analyse a dataset held in orbit: where it runs, when its result is on the ground,
    and the quote that chose it (both ways, with their times, costs and contact windows)."""

    class Plan(models.TextChoices):
        IN_ORBIT = "in_orbit", _("Compute in orbit, downlink the result")
        GROUND = "ground", _("Downlink the raw data, compute on the ground")

    order = models.OneToOneField(Order, on_delete=models.PROTECT, primary_key=True, related_name="orbit")
    dataset = models.ForeignKey("orbit.Dataset", on_delete=models.PROTECT, related_name="+")
    result_size_gb = models.DecimalField(max_digits=10, decimal_places=3)
    plan = models.CharField(max_length=16, choices=Plan.choices)
    result_at = models.DateTimeField(help_text="When the result is expected on the ground.")
    quote = models.JSONField()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(result_size_gb__gt=0), name="orbit_order_result_positive")]

    def __str__(self) -> str:
        return f"orbit order {self.pk} ({self.plan})"


class FeedEvent(models.Model):
    """Something an organization should know, in its feed (``GET feed/``): a price rise that
    reaches one of its leases, a lease ended because a rise passed its ceiling."""

    class Kind(models.TextChoices):
        PRICE_RISE = "price_rise", _("A price rise reaches the lease")
        PRICE_ABOVE_MAX = "price_above_max", _("The lease ended: the price rose above its max_price")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("organizations.Organization", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="+")
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["-occurred_at", "id"]
        indexes = [models.Index(fields=["organization", "-occurred_at"], name="feed_event_org_idx")]

    def __str__(self) -> str:
        return f"{self.kind} for {self.organization_id} at {self.occurred_at:%Y-%m-%d %H:%M}"


class PriceIndexSnapshot(models.Model):
    """One GPU model's active offers in one hour: per hub, each distinct card-hour price and the
    free cards offered at it (``offers``), and the index (p10, median, p90, cards) of each hub, of
    east and west and of the nation, computed from them when the snapshot is taken
    (``marketplace.price_index``). The beat takes one snapshot an hour: the table grows by one row
    per GPU model an hour, fewer than GPU models x hubs."""

    id = models.BigAutoField(primary_key=True)
    hour = models.DateTimeField(help_text="The start of the UTC hour.")
    gpu_model = models.ForeignKey("pools.GpuModel", on_delete=models.PROTECT, related_name="+")
    offers = models.JSONField(help_text='Per hub, [price, free cards] by price: {"ningxia": [["12.5", 40]]}.')
    index = models.JSONField(
        help_text='Per area (hub, east, west, national): {"p10": "..", "median": "..", "p90": "..", "cards": 48}.'
    )
    taken_at = models.DateTimeField()

    class Meta:
        ordering = ["hour", "gpu_model"]
        # An hourly series reads the index alone, from this unique index (an index-only scan): a month
        # of one model is some 50 pages, where its rows lie on 720 (every hour's models lie together).
        constraints = [
            models.UniqueConstraint(fields=["gpu_model", "hour"], include=["index"], name="price_index_snapshot_unique")
        ]

    def __str__(self) -> str:
        return f"{self.gpu_model_id} at {self.hour:%Y-%m-%d %H:00}"
