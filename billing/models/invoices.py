import uuid
from typing import Any

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _


class Invoice(models.Model):
    """One per buyer per monthly period (Asia/Shanghai months, stored in UTC).

    ``draft`` while the period is open: its lines are rated live from usage.
    ``finalized`` after the period and its grace for late usage: lines are
    stored, vouchers and credits applied, the ledger posted, a number given.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        FINALIZED = "finalized", _("Finalized")
        PAID = "paid", _("Paid")
        VOID = "void", _("Void")
        UNCOLLECTIBLE = "uncollectible", _("Uncollectible")

    class CollectionMethod(models.TextChoices):
        STRIPE = "stripe", _("Card or wallet through Stripe")
        BANK_TRANSFER = "bank_transfer", _("Bank transfer")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="invoices")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    number = models.CharField(max_length=20, null=True, blank=True, unique=True)
    currency = models.CharField(max_length=3, default="CNY")
    collection_method = models.CharField(
        max_length=16, choices=CollectionMethod.choices, default=CollectionMethod.STRIPE
    )
    subtotal = models.BigIntegerField(default=0)
    voucher_credit = models.BigIntegerField(default=0)
    bank_credit = models.BigIntegerField(default=0)
    amount_due = models.BigIntegerField(default=0)
    tax = models.BigIntegerField(
        default=0, help_text="Fen of VAT in the subtotal (prices are tax-inclusive): the sum of the lines' taxes."
    )
    amount_paid = models.BigIntegerField(default=0, help_text="Fen received: card payments and bank transfers.")
    amount_refunded = models.BigIntegerField(
        default=0, help_text="Fen of what was received that is to go back, or went back (see Refund)."
    )
    payment_attempts = models.PositiveIntegerField(default=0)
    next_payment_attempt_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.CharField(max_length=200, blank=True)
    hold_reason = models.CharField(
        max_length=500,
        blank=True,
        default="",
        db_default="",
        help_text="Why finalizing set this draft aside (usage without a price); empty once it is finalized.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_start", "buyer_id"]
        constraints = [
            models.UniqueConstraint(fields=["buyer", "period_start"], name="invoice_one_per_buyer_period"),
            models.CheckConstraint(
                condition=Q(amount_due=F("subtotal") - F("voucher_credit") - F("bank_credit")),
                name="invoice_amount_due_is_the_rest",
            ),
            models.CheckConstraint(
                condition=Q(
                    voucher_credit__gte=0,
                    bank_credit__gte=0,
                    amount_due__gte=0,
                    amount_paid__gte=0,
                    amount_refunded__gte=0,
                ),
                name="invoice_amounts_not_negative",
            ),
            # What an invoice keeps of what it received is never more than it owes: a payment beyond
            # it (a card charge landing after a transfer, or on a void invoice) is refunded at once.
            models.CheckConstraint(
                condition=Q(amount_paid__lte=F("amount_due") + F("amount_refunded")), name="invoice_not_overpaid"
            ),
            models.CheckConstraint(
                condition=Q(amount_refunded__lte=F("amount_paid")), name="invoice_refunds_what_it_received"
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(number__isnull=False), name="invoice_finalized_has_number"
            ),
        ]
        indexes = [models.Index(fields=["status", "next_payment_attempt_at"], name="invoice_collect_idx")]

    def __str__(self) -> str:
        return self.number or f"draft {self.buyer_id} {self.period_start:%Y-%m}"

    @property
    def subtotal_without_tax(self) -> int:
        return self.subtotal - self.tax

    @property
    def current_fapiao(self) -> Any:
        """The latest fapiao request of this invoice (prefetch ``fapiao_requests`` for lists), or None."""
        requests = sorted(self.fapiao_requests.all(), key=lambda request: (request.requested_at, str(request.pk)))
        return requests[-1] if requests else None

    @property
    def reference(self) -> str:
        """How the ledger refers to this invoice."""
        return f"invoice:{self.pk}"


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage", _("Usage")
        ADJUSTMENT = "adjustment", _("Late usage of an earlier period")
        CLAIM_REJECTED = "claim_rejected", _("Voucher claim rejected: the voucher's share billed back")
        RESERVED = "reserved", _("Reserved card-hours booked (take-or-pay), used or not")
        CANCEL_FEE = "cancel_fee", _("Reserved booking cancelled before its start")
        RESALE = "resale", _("Usage of deposited card-hours: the depositor earns it, less the platform's share")

    class Unit(models.TextChoices):
        CARD_HOUR = "card_hour", _("Card-hour")
        MILLION_TOKENS = "million_tokens", _("Million tokens")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.USAGE)
    lease = models.ForeignKey("marketplace.Lease", on_delete=models.PROTECT, related_name="invoice_lines")
    pool = models.ForeignKey("pools.ResourcePool", on_delete=models.PROTECT, related_name="+")
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    price_plan = models.ForeignKey("pools.PricePlan", on_delete=models.PROTECT, related_name="+")
    metric = models.CharField(max_length=16)
    model = models.CharField(max_length=100, blank=True)
    band = models.CharField(max_length=16, blank=True, help_text="Time-of-use band, for card-hours.")
    unit = models.CharField(max_length=16, choices=Unit.choices)
    quantity = models.DecimalField(max_digits=24, decimal_places=10)
    rate = models.DecimalField(max_digits=22, decimal_places=10)
    amount = models.BigIntegerField(help_text="quantity x rate, rounded once, in fen.")
    voucher_amount = models.BigIntegerField(default=0)
    description = models.CharField(
        max_length=300, blank=True, default="", db_default="", help_text="Why an adjustment line is billed."
    )
    vat_rate = models.DecimalField(
        max_digits=5, decimal_places=4, default=0, help_text="VAT rate of the line's service kind (billing.vat)."
    )
    tax = models.BigIntegerField(default=0, help_text="Fen of VAT in ``amount`` (billing.vat.vat_split).")

    class Meta:
        ordering = ["invoice", "kind", "lease_id", "metric", "model", "band"]
        constraints = [
            # The tax is part of the amount, with its sign: amount without tax and tax add up to it.
            models.CheckConstraint(
                condition=Q(tax__gte=0, tax__lte=F("amount")) | Q(tax__lte=0, tax__gte=F("amount")),
                name="invoice_line_tax_within_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.lease_id} {self.metric} {self.quantity} x {self.rate} = {self.amount}"

    @property
    def amount_without_tax(self) -> int:
        return self.amount - self.tax


class InvoiceSequence(models.Model):
    """The last invoice number given in a year: numbers are gapless per year."""

    year = models.PositiveIntegerField(primary_key=True)
    last = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last}"


class ProviderStatement(models.Model):
    """What a provider earned in a period: gross usage, the platform's commission, net payable."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="statements")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3, default="CNY")
    gross = models.BigIntegerField(default=0)
    commission = models.BigIntegerField(default=0)
    net = models.BigIntegerField(default=0)
    tax = models.BigIntegerField(
        default=0, help_text="Fen of VAT in ``gross``: the sum of the taxes of the provider's invoice lines."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "period_start"], name="statement_one_per_provider_period"),
            models.CheckConstraint(condition=Q(net=F("gross") - F("commission")), name="statement_net_is_the_rest"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id} {self.period_start:%Y-%m}: {self.net}"

    @property
    def gross_without_tax(self) -> int:
        return self.gross - self.tax


class InvoiceAdjustment(models.Model):
    """An amount to bill a buyer on its next invoice, with why: a voucher's share of a line that
    the program's issuer rejected in its claim review. Recorded once per ``reference``; finalizing
    the next invoice adds it as a line (``invoice`` set); voiding that invoice frees it again.

    Its ledger side: the buyer's claim rebill account holds it until an invoice bills it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    source_line = models.ForeignKey(InvoiceLine, on_delete=models.PROTECT, related_name="+")
    reference = models.CharField(max_length=100, unique=True, help_text="What it is for, e.g. claim-line:<id>.")
    amount = models.BigIntegerField(help_text="Fen.")
    currency = models.CharField(max_length=3, default="CNY")
    description = models.CharField(max_length=300)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="adjustments")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="invoice_adjustment_positive")]
        indexes = [models.Index(fields=["buyer", "invoice"], name="invoice_adjustment_due_idx")]

    def __str__(self) -> str:
        return f"{self.reference}: {self.amount}"

    def as_invoice_line(self, invoice: Invoice, **fields: object) -> InvoiceLine:
        """The (unsaved) line that bills it: on the usage line it comes from, with no quantity of its own."""
        source = self.source_line
        return InvoiceLine(
            invoice=invoice,
            kind=InvoiceLine.Kind.CLAIM_REJECTED,
            lease_id=source.lease_id,
            pool_id=source.pool_id,
            provider_id=source.provider_id,
            price_plan_id=source.price_plan_id,
            metric=source.metric,
            model=source.model,
            band=source.band,
            unit=source.unit,
            quantity=0,
            rate=0,
            amount=self.amount,
            description=self.description,
            # The voucher's share was taxed with its line on the invoice that billed the usage (and on
            # that invoice's fapiao): billing it back collects it, it is no second sale.
            vat_rate=0,
            tax=0,
            **fields,
        )


class DepositResale(models.Model):
    """What one resale line earned a deposit: the line's amount split between the depositor's bank
    credit (a ``capacity_deposit`` grant) and the platform's share. One row per line: a resold
    card-hour is credited once."""

    id = models.BigAutoField(primary_key=True)
    deposit = models.ForeignKey("marketplace.CapacityDeposit", on_delete=models.PROTECT, related_name="resales_billed")
    line = models.OneToOneField(InvoiceLine, on_delete=models.PROTECT, related_name="resale")
    card_hours = models.DecimalField(max_digits=24, decimal_places=10)
    amount = models.BigIntegerField(help_text="Fen the reseller was billed.")
    platform = models.BigIntegerField(help_text="Fen the platform keeps (DEPOSIT_PLATFORM_SHARE).")
    credit = models.BigIntegerField(help_text="Fen credited to the depositor's bank.")
    grant = models.ForeignKey("billing.CreditGrant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount=F("platform") + F("credit")), name="resale_split_adds_up"),
        ]

    def __str__(self) -> str:
        return f"{self.card_hours} card-hours of {self.deposit_id}: {self.credit} fen credited"
