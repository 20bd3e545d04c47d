from django.db import models
from django.db.models import Q


class UsageMetric(models.TextChoices):
    GPU_SECONDS = "gpu_seconds", "Card-seconds"
    INPUT_TOKENS = "input_tokens", "Input tokens"
    OUTPUT_TOKENS = "output_tokens", "Output tokens"


class UsageEvent(models.Model):
    """A usage event as it arrived: the audit trail, and its own exactly-once guard.

    ``key`` is unique forever: 16 bytes of SHA-256 over the provider, ``source`` and
    ``id`` (SQL ``billing_usage_event_key``), per provider, so that one provider's keys
    never block, nor reveal, another's events. The table is partitioned by hash of
    ``key`` (migration 0018, not Django), so each partition keeps the unique index
    and an event is written once; ``digest`` (16 bytes of the SHA-256 of its
    content) tells a replay (same content) from a conflict (same key, other content).
    """

    key = models.UUIDField(primary_key=True)
    digest = models.UUIDField()
    source = models.CharField(max_length=500)
    event_id = models.CharField(max_length=200)
    type = models.CharField(max_length=64)
    lease = models.ForeignKey("marketplace.Lease", on_delete=models.DO_NOTHING, db_constraint=False)
    provider = models.ForeignKey("organizations.Organization", on_delete=models.DO_NOTHING, db_constraint=False)
    time = models.DateTimeField()
    quantity = models.DecimalField(max_digits=20, decimal_places=6, null=True)
    cards = models.IntegerField(null=True)
    model = models.CharField(max_length=100, blank=True)
    input_tokens = models.BigIntegerField(null=True)
    output_tokens = models.BigIntegerField(null=True)
    data = models.JSONField()
    received_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "billing_usageevent"

    def __str__(self) -> str:
        return f"{self.type} {self.source}#{self.event_id}"


class UsageRollup(models.Model):
    """Usage per lease, metric (and token model) and hour, summed from the raw events.

    Rebuilt bucket by bucket from the raw events, so running the rollup twice,
    or for a bucket that gets a late event, gives the same rows.

    A bucket's row is billed by the invoice of its month, as it stands when that
    invoice is finalized, and never changes after: the rollup holds a share lock
    on that invoice while it writes, and once the invoice is finalized it writes
    what events add later to a second, ``late`` row of the bucket, which the
    next invoice bills as an adjustment (``billed_quantity`` says how much of a
    late row is billed). So month-end reads the month's rows and marks none.

    Usage is rated with the price version in force when it happened: an hour in
    which a version takes effect (a pool's first hour, a price changed mid-hour)
    is split at the version's start into a row per version.
    """

    id = models.BigAutoField(primary_key=True)
    lease = models.ForeignKey("marketplace.Lease", on_delete=models.PROTECT, related_name="usage_rollups")
    pool = models.ForeignKey("pools.ResourcePool", on_delete=models.PROTECT, related_name="usage_rollups")
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    metric = models.CharField(max_length=16, choices=UsageMetric.choices)
    model = models.CharField(max_length=100, blank=True, help_text="The token model; empty for card-seconds.")
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    price_plan = models.ForeignKey(
        "pools.PricePlan",
        null=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=(
            "In force when the usage happened. Null only in rows stored before hours were split at a price "
            "version's start: never billed; finalizing sets their invoice aside until a rebuild prices them."
        ),
    )
    quantity = models.DecimalField(max_digits=24, decimal_places=6)
    events = models.PositiveIntegerField()
    late = models.BooleanField(
        default=False, db_default=False, help_text="Added after the invoice of its month was finalized."
    )
    billed_quantity = models.DecimalField(
        max_digits=24, decimal_places=6, default=0, help_text="Of a late row: how much invoices have billed."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lease", "metric", "model", "hour", "price_plan", "late"],
                name="usage_rollup_bucket_unique",
                nulls_distinct=False,
            ),
            # A late row may take back usage (a rebuild that counts less than was billed).
            models.CheckConstraint(
                condition=Q(quantity__gte=0) | Q(late=True), name="usage_rollup_quantity_non_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["buyer", "hour"], name="usage_rollup_buyer_idx"),
            models.Index(fields=["provider", "hour"], name="usage_rollup_provider_idx"),
            models.Index(fields=["pool", "hour"], name="usage_rollup_pool_idx"),
            # Finalizing finds the few late rows without reading the month's (``late`` never changes: HOT updates stay).
            models.Index(fields=["buyer", "hour"], condition=Q(late=True), name="usage_rollup_late_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.lease_id} {self.metric} {self.hour:%Y-%m-%d %H}: {self.quantity}"


class UsageRollupDue(models.Model):
    """A (lease, hour) whose new events no rollup has counted yet: the rollups' outbox.

    Written in the transaction that stores the events, removed by the rollup that
    counted them (only if no later batch marked it again meanwhile). The rollup task
    is queued after commit, but Redis keeps nothing on disk: Celery beat queues again
    the buckets marked longer ago than ``USAGE_ROLLUP_REQUEUE_SECONDS``, so usage is
    rolled up, and billed, even when the task that should have done it was lost.
    """

    id = models.BigAutoField(primary_key=True)
    lease = models.ForeignKey("marketplace.Lease", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    batch = models.UUIDField(help_text="The last ingest that marked it.")
    marked_at = models.DateTimeField(help_text="When it was first marked.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lease", "hour"], name="usage_rollup_due_unique")]
        indexes = [models.Index(fields=["marked_at"], name="usage_rollup_due_marked_idx")]

    def __str__(self) -> str:
        return f"{self.lease_id} {self.hour:%Y-%m-%d %H} due since {self.marked_at:%H:%M:%S}"
