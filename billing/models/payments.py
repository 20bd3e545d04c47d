import uuid

from django.db import models
from django.db.models import Q


class StripeCustomer(models.Model):
    organization = models.OneToOneField(
        "organizations.Organization", on_delete=models.PROTECT, related_name="stripe_customer"
    )
    customer_id = models.CharField(max_length=100, unique=True)
    default_payment_method = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.customer_id


class PaymentAttempt(models.Model):
    """One try to collect an invoice through Stripe, recorded before Stripe is called."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveIntegerField()
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="CNY")
    idempotency_key = models.CharField(max_length=100, unique=True)
    payment_intent_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["invoice", "number"], name="payment_attempt_number_unique")]

    def __str__(self) -> str:
        return f"{self.invoice_id} #{self.number} {self.status}"


class Refund(models.Model):
    """Money an invoice received that goes back to the buyer, recorded before it is sent back.

    A card payment goes back through Stripe: the refund stays ``pending`` until Stripe made it,
    and the sweep (``refunds_make_due``) tries again until it has. A bank transfer goes back as a
    refund the operator sends (recorded as made), or, as configured, as compute-bank credit;
    the ledger entry's kind says which (``refund.stripe``, ``refund.bank_transfer``,
    ``bank.grant.refund``).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending: to be made through Stripe"
        SUCCEEDED = "succeeded", "Made"

    class Method(models.TextChoices):
        STRIPE = "stripe", "Refunded to the card through Stripe"
        BANK_TRANSFER = "bank_transfer", "Returned by bank transfer"
        BANK_CREDIT = "bank_credit", "Held as compute-bank credit"

    class Reason(models.TextChoices):
        VOID = "void", "The invoice was voided"
        OVERPAYMENT = "overpayment", "Paid twice (a card charge and a transfer)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="refunds")
    attempt = models.ForeignKey(
        PaymentAttempt,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refunds",
        help_text="The card payment it refunds; empty for a bank transfer.",
    )
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="CNY")
    method = models.CharField(max_length=16, choices=Method.choices)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stripe_refund_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    grant = models.OneToOneField(
        "billing.CreditGrant", null=True, blank=True, on_delete=models.PROTECT, related_name="refund"
    )
    tries = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["status", "next_try_at"], name="refund_due_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(
                condition=~Q(method="stripe") | Q(attempt__isnull=False), name="refund_stripe_has_attempt"
            ),
            models.CheckConstraint(
                condition=Q(status="pending", refunded_at__isnull=True)
                | Q(status="succeeded", refunded_at__isnull=False),
                name="refund_refunded_at_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"refund {self.amount} fen {self.method} {self.status}"


class StripeEvent(models.Model):
    """A webhook from Stripe, stored as received before it is acted on; processed once per event id."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} {self.status}"


class UnprocessableWebhook(models.Model):
    """A webhook whose Stripe signature verified but whose body cannot be processed (not JSON, not an
    event, a field of another type than Stripe's): answered 400 and kept as received for operators
    to inspect (the admin); nothing acted on it. The same body delivered again is the same row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the body.")
    body = models.BinaryField(help_text="As received: it may not be UTF-8.")
    error = models.TextField()
    deliveries = models.PositiveIntegerField(default=1)
    received_at = models.DateTimeField(auto_now_add=True)
    last_received_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_received_at"]

    def __str__(self) -> str:
        return f"{self.digest[:12]} {self.error[:60]}"
