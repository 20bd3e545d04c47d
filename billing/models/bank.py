"""The compute bank: a buyer's prepaid credit, spent before its card is charged.

A buyer's credit is a set of grants (top-ups it paid for, and credit the
platform gave: promotions, refunds, capacity deposits), each with what is left
of it, an optional expiry and a priority. Every change of what is left is a
movement linked to the journal entry that booked it; paid credit and granted
credit are separate ledger accounts. Holds reserve credit for running work of a
prepaid buyer; they move no money.
"""

import uuid

from django.db import models
from django.db.models import F, Q


class Bank(models.Model):
    """A buyer's bank settings, and the row every change of its credit locks first."""

    class Mode(models.TextChoices):
        POSTPAID = "postpaid", "Postpaid: usage is billed monthly; credit pays first, the card the rest"
        PREPAID = "prepaid", "Prepaid: running work must be covered by credit, held as it runs"

    organization = models.OneToOneField("organizations.Organization", on_delete=models.PROTECT, related_name="bank")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.POSTPAID)
    currency = models.CharField(max_length=3, default="CNY")
    low_balance_threshold = models.BigIntegerField(
        null=True, blank=True, help_text="Fen; below it the buyer gets a low-balance event. Empty: the default."
    )
    auto_top_up_threshold = models.BigIntegerField(
        null=True, blank=True, help_text="Fen; below it the card on file is charged auto_top_up_amount."
    )
    auto_top_up_amount = models.BigIntegerField(null=True, blank=True, help_text="Fen.")
    low_balance_since = models.DateTimeField(
        null=True, blank=True, help_text="Set when the balance fell below the threshold (one event per fall)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(auto_top_up_threshold__isnull=True, auto_top_up_amount__isnull=True)
                | Q(auto_top_up_threshold__gte=0, auto_top_up_amount__gt=0),
                name="bank_auto_top_up_complete",
            ),
            models.CheckConstraint(
                condition=Q(low_balance_threshold__isnull=True) | Q(low_balance_threshold__gte=0),
                name="bank_low_balance_threshold_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"bank of {self.organization_id} ({self.mode})"


class CreditGrant(models.Model):
    """Credit given to a buyer at once; spent soonest-expiring first, then by priority, then oldest."""

    class Source(models.TextChoices):
        TOP_UP = "top_up", "Top-up (paid)"
        PROMOTION = "promotion", "Promotion"
        REFUND = "refund", "Refund as credit"
        CAPACITY_DEPOSIT = "capacity_deposit", "Capacity deposit (resale of unused reserved capacity)"

    PAID = (Source.TOP_UP,)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="credit_grants")
    source = models.CharField(max_length=20, choices=Source.choices)
    amount = models.BigIntegerField(help_text="Fen granted.")
    remaining = models.BigIntegerField(help_text="Fen left to spend.")
    currency = models.CharField(max_length=3, default="CNY")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    priority = models.PositiveSmallIntegerField(
        default=100, help_text="Among grants expiring at the same time, a lower number is spent first."
    )
    note = models.CharField(max_length=300, blank=True)
    granted_by = models.CharField(max_length=200)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["buyer", "expires_at"], name="grant_buyer_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="grant_amount_positive"),
            # The balance never goes below zero, whatever the code above does.
            models.CheckConstraint(condition=Q(remaining__gte=0), name="grant_remaining_not_negative"),
            models.CheckConstraint(condition=Q(remaining__lte=F("amount")), name="grant_remaining_at_most_amount"),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.remaining}/{self.amount} fen of {self.buyer_id}"

    @property
    def is_paid(self) -> bool:
        return self.source in self.PAID


class BankMovement(models.Model):
    """One change of what is left of a grant, with the journal entry that booked it."""

    class Reason(models.TextChoices):
        GRANT = "grant", "Credit granted"
        DRAW = "draw", "Spent (an invoice)"
        DRAW_REVERSED = "draw_reversed", "Given back (the invoice was voided)"
        EXPIRY = "expiry", "Expired (breakage)"

    id = models.BigAutoField(primary_key=True)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="bank_movements")
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="movements")
    amount = models.BigIntegerField(help_text="Fen: positive adds to the grant, negative takes from it.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    reference = models.CharField(max_length=100, help_text="What it is for, e.g. invoice:<id> or top-up:<id>.")
    entry = models.ForeignKey("billing.JournalEntry", on_delete=models.PROTECT, related_name="bank_movements")
    reversed = models.BooleanField(default=False, help_text="A draw given back by a void.")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["buyer", "-created_at"], name="bank_movement_buyer_idx"),
            models.Index(fields=["reference"], name="bank_movement_reference_idx"),
        ]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="bank_movement_not_zero")]

    def __str__(self) -> str:
        return f"{self.reason} {self.amount:+d} fen ({self.reference})"


class CreditHold(models.Model):
    """Credit reserved for a prepaid buyer's running lease: the expected cost of its booked time
    (up to the horizon), drawn down by its metered usage, released once when the lease ends."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        RELEASED = "released", "Released"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="credit_holds")
    lease = models.OneToOneField("marketplace.Lease", on_delete=models.PROTECT, related_name="credit_hold")
    amount = models.BigIntegerField(help_text="Fen reserved in all; the lease's usage is drawn from it.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    warned_at = models.DateTimeField(
        null=True, blank=True, help_text="When the buyer was told the next horizon is not covered."
    )
    created_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["buyer", "status"], name="hold_buyer_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="hold_amount_not_negative"),
            models.CheckConstraint(
                condition=Q(status="active", released_at__isnull=True)
                | Q(status="released", released_at__isnull=False),
                name="hold_released_at_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"hold of {self.amount} fen for lease {self.lease_id} ({self.status})"


class TopUp(models.Model):
    """A buyer buying credit through a Stripe PaymentIntent; granted once, when Stripe says it succeeded."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="top_ups")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="CNY")
    automatic = models.BooleanField(default=False, help_text="Made by the auto top-up, charged to the card on file.")
    payment_intent_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_message = models.CharField(max_length=500, blank=True)
    grant = models.OneToOneField(CreditGrant, null=True, blank=True, on_delete=models.PROTECT, related_name="top_up")
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="top_up_amount_positive"),
            models.CheckConstraint(
                condition=~Q(status="succeeded") | Q(grant__isnull=False), name="top_up_succeeded_has_grant"
            ),
            # One automatic top-up in flight per buyer: a slow webhook never leads to a second charge.
            models.UniqueConstraint(
                fields=["buyer"], condition=Q(automatic=True, status="pending"), name="one_pending_auto_top_up"
            ),
        ]

    def __str__(self) -> str:
        return f"top-up {self.amount} fen {self.status}"

    @property
    def reference(self) -> str:
        return f"top-up:{self.pk}"


class BankEvent(models.Model):
    """Something the buyer should know about its bank (also logged)."""

    class Kind(models.TextChoices):
        LOW_BALANCE = "low_balance", "Low balance"
        LEASE_WARNED = "lease_warned", "A running lease is not covered for its next horizon"
        LEASE_ENDED = "lease_ended", "A lease was ended for insufficient funds"
        TOP_UP_FAILED = "top_up_failed", "A top-up failed"

    id = models.BigAutoField(primary_key=True)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="bank_events")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    message = models.CharField(max_length=500)
    lease = models.ForeignKey("marketplace.Lease", null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["buyer", "-created_at"], name="bank_event_buyer_idx")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
