"""Compute-voucher subsidy programs, the vouchers they grant, and what the vouchers paid.

Money is integer fen. A program's ``committed`` holds what its vouchers may
still spend or already spent: a voucher's face value while it lives, and only
what it spent once it expired or was revoked (the rest is ``released`` back),
less what its issuer ``rejected`` in a claim review (billed back to the company
and given back to the budget, never to the voucher). So for every voucher
``face_value == remaining + redeemed - reversed + released + rejected`` (its
commitment is ``face_value - released - rejected``), and for every program
``committed`` is the sum of its vouchers' commitments, ``committed == outstanding
+ redeemed`` and ``budget_left == budget - committed``; the database keeps
``committed`` within the budget and ``reconcile`` checks the sums.
``vouchers.selectors.program_report`` derives all of it from rows.
"""

import uuid
from datetime import timedelta

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

# A voucher pays for usage within its validity. The invoice of its last days is
# finalized after it ends, so it stays redeemable (and its unused value stays
# committed) this long after its validity, then expires.
LATE_INVOICE_GRACE = timedelta(days=7)


class Workload(models.TextChoices):
    """The workloads a program may fund; the same values as ``marketplace.models.Workload``,
    which this app may not import (a test keeps the two equal)."""

    REALTIME_INFERENCE = "realtime_inference", _("Real-time inference")
    BATCH_INFERENCE = "batch_inference", _("Batch inference")
    TRAINING = "training", _("Training")


class VoucherProgram(models.Model):
    """An issuer's subsidy program: a budget, a coverage share and who may benefit.

    Empty eligibility lists mean "any". Buyer eligibility (provinces, cities,
    SME) is checked when a voucher is granted; line eligibility (providers,
    hubs, GPU models, workloads) when a voucher pays.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        OPEN = "open", _("Open")
        CLOSED = "closed", _("Closed")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    issuer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="voucher_programs")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, default="CNY")
    budget = models.BigIntegerField(help_text="Fen.")
    committed = models.BigIntegerField(
        default=0,
        help_text="Fen: face values of live vouchers plus what ended vouchers spent, less claim lines rejected.",
    )
    coverage_share = models.DecimalField(
        max_digits=5, decimal_places=4, help_text="Share of an eligible bill a voucher pays, above 0 and at most 1."
    )
    per_company_yearly_cap = models.BigIntegerField(
        help_text="Fen a company may receive per calendar year (Asia/Shanghai) across all of the issuer's programs."
    )
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    provinces = models.JSONField(default=list, blank=True, help_text="Buyer provinces; empty: any.")
    cities = models.JSONField(default=list, blank=True, help_text="Buyer cities; empty: any.")
    sme_only = models.BooleanField(default=False, help_text="Only small and medium enterprises.")
    hubs = models.JSONField(default=list, blank=True, help_text="Hub codes; empty: any.")
    gpu_models = models.JSONField(default=list, blank=True, help_text="GPU model codes; empty: any.")
    workloads = models.JSONField(default=list, blank=True, help_text="Workloads; empty: any.")
    providers = models.ManyToManyField(
        "organizations.Organization", blank=True, related_name="+", help_text="Approved providers; none: any."
    )
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["issuer", "-created_at"], name="program_issuer_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(budget__gt=0), name="program_budget_positive"),
            models.CheckConstraint(
                condition=Q(committed__gte=0, committed__lte=F("budget")), name="program_committed_within_budget"
            ),
            models.CheckConstraint(
                condition=Q(coverage_share__gt=0, coverage_share__lte=1), name="program_coverage_share_range"
            ),
            models.CheckConstraint(condition=Q(per_company_yearly_cap__gt=0), name="program_yearly_cap_positive"),
            models.CheckConstraint(condition=Q(valid_until__gt=F("valid_from")), name="program_valid_window"),
            models.CheckConstraint(condition=Q(status__in=["draft", "open", "closed"]), name="program_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def budget_left(self) -> int:
        return self.budget - self.committed


class Voucher(models.Model):
    """A company's voucher: it pays its program's share of eligible bills up to its face value.

    Not transferable: the buyer never changes. ``remaining`` changes only under
    the voucher's row lock (``vouchers.services``).
    """

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        EXHAUSTED = "exhausted", _("Exhausted")
        EXPIRED = "expired", _("Expired")
        REVOKED = "revoked", _("Revoked")

    LIVE = (Status.ACTIVE, Status.EXHAUSTED)
    ENDED = (Status.EXPIRED, Status.REVOKED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    code = models.CharField(max_length=24, unique=True)
    program = models.ForeignKey(VoucherProgram, on_delete=models.PROTECT, related_name="vouchers")
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="vouchers")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    currency = models.CharField(max_length=3, default="CNY")
    face_value = models.BigIntegerField(help_text="Fen.")
    remaining = models.BigIntegerField(help_text="Fen it may still pay.")
    released = models.BigIntegerField(
        default=0,
        help_text="Fen given back to the program's budget unused: at expiry or revocation, and reversals after it.",
    )
    rejected = models.BigIntegerField(
        default=0,
        help_text="Fen of its redemptions the issuer rejected in a claim review: billed back to the company and "
        "given back to the program's budget, never to the voucher.",
    )
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    issued_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="When it expired or was revoked.")
    ended_by = models.CharField(max_length=200, blank=True)
    end_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["valid_until", "created_at"]
        indexes = [
            models.Index(fields=["buyer", "status", "valid_until"], name="voucher_buyer_idx"),
            models.Index(fields=["program", "status"], name="voucher_program_idx"),
            models.Index(fields=["status", "valid_until"], name="voucher_expiry_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(face_value__gt=0), name="voucher_face_value_positive"),
            models.CheckConstraint(
                condition=Q(
                    remaining__gte=0,
                    released__gte=0,
                    rejected__gte=0,
                    remaining__lte=F("face_value") - F("released") - F("rejected"),
                ),
                name="voucher_remaining_within_face_value",
            ),
            models.CheckConstraint(condition=Q(valid_until__gt=F("valid_from")), name="voucher_valid_window"),
            models.CheckConstraint(
                condition=Q(status="active", remaining__gt=0, released=0, ended_at__isnull=True)
                | Q(status="exhausted", remaining=0, released=0, ended_at__isnull=True)
                | Q(status__in=["expired", "revoked"], remaining=0, ended_at__isnull=False),
                name="voucher_status_matches_values",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.status})"


class YearlyCapUsage(models.Model):
    """What one company received from one issuer's programs in one calendar year (Asia/Shanghai).

    The row is the lock that keeps concurrent invoices of a company within the
    yearly cap; ``redeemed`` equals its redemptions less their reversals.
    """

    id = models.BigAutoField(primary_key=True)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    issuer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    year = models.PositiveSmallIntegerField()
    redeemed = models.BigIntegerField(default=0, help_text="Fen.")

    class Meta:
        verbose_name = "yearly cap usage"
        constraints = [
            models.UniqueConstraint(fields=["buyer", "issuer", "year"], name="yearly_cap_usage_unique"),
            models.CheckConstraint(condition=Q(redeemed__gte=0), name="yearly_cap_usage_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.buyer_id} from {self.issuer_id} in {self.year}: {self.redeemed}"


class Claim(models.Model):
    """One invoice's claim on its buyer's vouchers, recorded before anything is redeemed.

    ``invoice_ref`` is unique, so redeeming an invoice again (a retry, or two
    workers at once) finds this row and replays ``outcome`` instead of paying twice.
    """

    id = models.BigAutoField(primary_key=True)
    invoice_ref = models.CharField(max_length=100, unique=True)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    lines_digest = models.CharField(max_length=64, help_text="SHA-256 of the charge lines claimed.")
    outcome = models.JSONField(default=list, help_text="Per line: amount, voucher amount and why not more.")
    claimed_at = models.DateTimeField()
    reversed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"claim of invoice {self.invoice_ref}"


class Redemption(models.Model):
    """What one voucher paid of one invoice line, with the usage it paid for."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    claim = models.ForeignKey(Claim, on_delete=models.PROTECT, related_name="redemptions")
    voucher = models.ForeignKey(Voucher, on_delete=models.PROTECT, related_name="redemptions")
    program = models.ForeignKey(VoucherProgram, on_delete=models.PROTECT, related_name="redemptions")
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    invoice_ref = models.CharField(max_length=100)
    line_ref = models.CharField(max_length=100)
    lease_id = models.CharField(max_length=64)
    pool_id = models.CharField(max_length=64)
    hub = models.CharField(max_length=64)
    gpu_model = models.CharField(max_length=64)
    workload = models.CharField(max_length=64)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    cap_year = models.PositiveSmallIntegerField(
        help_text="The yearly cap it counts against (usage start, Asia/Shanghai)."
    )
    line_amount = models.BigIntegerField(help_text="Fen: the whole invoice line.")
    amount = models.BigIntegerField(help_text="Fen the voucher paid.")
    currency = models.CharField(max_length=3, default="CNY")
    redeemed_at = models.DateTimeField()

    class Meta:
        ordering = ["redeemed_at", "line_ref"]
        indexes = [
            models.Index(fields=["program", "redeemed_at"], name="redemption_program_idx"),
            models.Index(fields=["buyer", "cap_year"], name="redemption_buyer_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["invoice_ref", "line_ref", "voucher"], name="redemption_once_per_line"),
            models.CheckConstraint(
                condition=Q(amount__gt=0, amount__lte=F("line_amount")), name="redemption_amount_within_line"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} fen of {self.invoice_ref}/{self.line_ref}"


class Reversal(models.Model):
    """A redemption undone, once and in full: because its invoice was voided, or because the
    issuer rejected it in its claim review.

    A void's value goes back to the voucher (``returned``) if it still lives, or
    to the program's budget as breakage if it expired or was revoked meanwhile.
    A rejected redemption's value (``rejected``) always goes back to the program's
    budget: the company is billed it, so the voucher may not spend it again.
    """

    id = models.BigAutoField(primary_key=True)
    redemption = models.OneToOneField(Redemption, on_delete=models.PROTECT, related_name="reversal")
    amount = models.BigIntegerField()
    returned = models.BigIntegerField(help_text="Fen back on the voucher.")
    breakage = models.BigIntegerField(help_text="Fen released to the budget: the voucher had ended.")
    rejected = models.BigIntegerField(
        default=0, help_text="Fen released to the budget: the issuer rejected the redemption in its claim review."
    )
    reversed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    amount__gt=0,
                    returned__gte=0,
                    breakage__gte=0,
                    amount=F("returned") + F("breakage") + F("rejected"),
                )
                & (Q(rejected=0) | Q(rejected=F("amount"))),
                name="reversal_parts_add_up",
            ),
        ]

    def __str__(self) -> str:
        return f"reversal of {self.redemption_id}"
