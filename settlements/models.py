"""Money owed moves: providers are paid what their statements owe them, and issuers are
claimed, with evidence, what their vouchers paid. Amounts are integer fen.

Payouts: a provider's ``PayoutAccount`` rows are the versions of where it is paid, each
effective from a time (a change waits a cooling-off period). A ``PayoutRun`` pays, per
provider, one ``PayoutLine`` made of ``PayoutItem`` rows: one invoice's share of the
provider's net (``share``), the reserve held back of it (``reserve``), or what a voided
invoice already paid takes back (``clawback``). An item is active until its line fails at
the bank; a unique constraint keeps one active item per provider, invoice and kind, so no
share is ever paid twice, whatever runs overlap.

Claims: a ``SubsidyClaim`` per voucher program and month holds one ``ClaimLine`` per
redemption (one-to-one: a redemption is on exactly one claim), reviewed by the issuer and paid
by ``ClaimPayment`` rows.
"""

import uuid

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _


class PayoutAccount(models.Model):
    """One version of where a provider is paid, effective from ``effective_at``. Never changed: a
    change is a new row, effective after the cooling-off period."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    account_name = models.CharField(max_length=200)
    bank_name = models.CharField(max_length=100)
    branch = models.CharField(max_length=100)
    account_number = models.CharField(max_length=34)
    requested_at = models.DateTimeField()
    effective_at = models.DateTimeField()
    requested_by = models.CharField(max_length=200)

    class Meta:
        ordering = ["-effective_at", "-requested_at"]
        indexes = [models.Index(fields=["provider", "effective_at"], name="payout_account_provider_idx")]

    def __str__(self) -> str:
        return f"{self.provider_id} from {self.effective_at:%Y-%m-%d %H:%M}: {self.masked_number}"

    @property
    def masked_number(self) -> str:
        return "*" * max(len(self.account_number) - 4, 0) + self.account_number[-4:]


class PayoutRun(models.Model):
    class Status(models.TextChoices):
        PREPARED = "prepared", _("Prepared: the batch is ready to upload")
        SENT = "sent", _("Sent to the bank")
        SETTLED = "settled", _("Every line paid or failed")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    period_start = models.DateTimeField(help_text="The month whose invoices (and earlier) it pays.")
    period_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PREPARED)
    currency = models.CharField(max_length=3, default="CNY")
    total = models.BigIntegerField(default=0)
    minimum = models.BigIntegerField(help_text="Fen: a provider owed less is carried forward.")
    reserve_rate = models.DecimalField(max_digits=5, decimal_places=4)
    carried_forward = models.JSONField(
        default=list, blank=True, help_text="Providers owed something not paid by this run, with why."
    )
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the bank batch CSV, hex.")
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_by = models.CharField(max_length=200, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(total__gte=0), name="payout_run_total_not_negative")]

    def __str__(self) -> str:
        return f"payout run {self.period_start:%Y-%m} ({self.status})"

    @property
    def reference(self) -> str:
        return f"payout-run:{self.pk}"


class PayoutLine(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("In the batch, not sent")
        SENT = "sent", _("Sent to the bank")
        PAID = "paid", _("Paid")
        FAILED = "failed", _("Failed: back to payable")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(PayoutRun, on_delete=models.PROTECT, related_name="lines")
    number = models.PositiveIntegerField(help_text="The line's number in the batch, from 1.")
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    account = models.ForeignKey(PayoutAccount, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="CNY")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=300, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="payout_line_number_unique"),
            models.UniqueConstraint(fields=["run", "provider"], name="payout_line_one_per_provider"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_line_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.reference}: {self.amount} ({self.status})"

    @property
    def reference(self) -> str:
        """The payment's reference at the bank, and in its return file."""
        return f"CGP{str(self.run_id).replace('-', '')[:12].upper()}{self.number:05d}"


class PayoutItem(models.Model):
    class Kind(models.TextChoices):
        SHARE = "share", _("The provider's net of a collected invoice, less the reserve")
        RESERVE = "reserve", _("The reserve held back of it, paid a month later")
        CLAWBACK = "clawback", _("Taken back: the invoice was voided after it was paid")

    id = models.BigAutoField(primary_key=True)
    line = models.ForeignKey(PayoutLine, on_delete=models.PROTECT, related_name="items")
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="+")
    statement = models.ForeignKey("billing.ProviderStatement", on_delete=models.PROTECT, related_name="payout_items")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField()
    active = models.BooleanField(default=True, help_text="False once its line failed: the amount is payable again.")

    class Meta:
        ordering = ["line", "invoice_id", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "invoice", "kind"], condition=Q(active=True), name="payout_item_paid_once"
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="payout_item_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.invoice_id}: {self.amount}"


class SubsidyClaim(models.Model):
    """The platform's claim on a voucher program's issuer for the redemptions of one month
    (by when they were redeemed, Asia/Shanghai): the evidence is its lines."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", _("Submitted: waiting for the issuer's review")
        REVIEWED = "reviewed", _("Reviewed: approved amount due")
        PAID = "paid", _("Approved amount received")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.CharField(max_length=40, unique=True)
    program = models.ForeignKey("vouchers.VoucherProgram", on_delete=models.PROTECT, related_name="subsidy_claims")
    issuer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3, default="CNY")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTED)
    claimed = models.BigIntegerField(default=0, help_text="Fen: what its lines claim.")
    approved = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    withdrawn = models.BigIntegerField(default=0, help_text="Fen of lines whose invoice was voided before review.")
    received = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.CharField(max_length=200, blank=True)
    due_at = models.DateTimeField(null=True, blank=True, help_text="When the approved amount is due.")
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_start", "program_id"]
        constraints = [
            models.UniqueConstraint(fields=["program", "period_start"], name="subsidy_claim_one_per_program_month"),
            models.CheckConstraint(
                condition=Q(received__lte=F("approved"), received__gte=0, approved__gte=0, rejected__gte=0),
                name="subsidy_claim_amounts",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.number} ({self.status})"


class ClaimLine(models.Model):
    class Status(models.TextChoices):
        CLAIMED = "claimed", _("Claimed")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected: billed back to the company")
        WITHDRAWN = "withdrawn", _("Withdrawn: its invoice was voided")

    class Reason(models.TextChoices):
        COMPANY_INELIGIBLE = "company_ineligible", _("The company is not eligible")
        USAGE_INELIGIBLE = "usage_ineligible", _("The usage is not eligible")
        EVIDENCE_INSUFFICIENT = "evidence_insufficient", _("The evidence does not support the line")
        DUPLICATE = "duplicate", _("Claimed before")
        OVER_CAP = "over_cap", _("Beyond the company's cap")
        OTHER = "other", _("Other (see the note)")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    claim = models.ForeignKey(SubsidyClaim, on_delete=models.PROTECT, related_name="lines")
    redemption = models.OneToOneField("vouchers.Redemption", on_delete=models.PROTECT, related_name="claim_line")
    amount = models.BigIntegerField(help_text="Fen: the voucher's share claimed.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CLAIMED)
    reason_code = models.CharField(max_length=32, choices=Reason.choices, blank=True)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["claim", "redemption__redeemed_at", "redemption__line_ref"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="claim_line_amount_positive")]

    def __str__(self) -> str:
        return f"{self.claim_id} {self.redemption_id}: {self.amount} ({self.status})"


class ClaimPayment(models.Model):
    """Money an issuer paid against a claim, by bank transfer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    claim = models.ForeignKey(SubsidyClaim, on_delete=models.PROTECT, related_name="payments")
    reference = models.CharField(max_length=100, help_text="The bank transfer's reference.")
    amount = models.BigIntegerField()
    received_at = models.DateTimeField()
    recorded_by = models.CharField(max_length=200)

    class Meta:
        ordering = ["received_at"]
        constraints = [
            models.UniqueConstraint(fields=["claim", "reference"], name="claim_payment_reference_unique"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="claim_payment_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.reference}: {self.amount}"
