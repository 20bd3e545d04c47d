"""The double-entry ledger: every movement of money is a journal entry whose legs sum to zero.

Amounts are integer fen: a positive leg debits its account, a negative one
credits it. PostgreSQL enforces the rules (see the ledger migration): a leg is
never zero, an entry's legs sum to zero per currency when its transaction
commits, posted entries and legs can be neither updated, deleted nor truncated,
legs join an entry only in the transaction that creates it (the table's
``created_xact`` column, filled by a trigger, is not a model field), and a leg is
in its account's currency. A mistake is corrected by a reversing entry.
"""

import uuid

from django.db import models
from django.db.models import Q


class Account(models.Model):
    class Purpose(models.TextChoices):
        BUYER_RECEIVABLE = "buyer_receivable", "Buyer receivable"
        PROVIDER_PAYABLE = "provider_payable", "Provider payable"
        PLATFORM_REVENUE = "platform_revenue", "Platform revenue (commission)"
        VOUCHER_RECEIVABLE = "voucher_receivable", "Voucher receivable from an issuer"
        BANK_PAID = "bank_paid", "Compute bank liability, paid credit"
        BANK_GRANTED = "bank_granted", "Compute bank liability, granted credit"
        BANK_CLEARING = "bank_clearing", "Compute bank credit drawn, to be applied to invoices"
        STRIPE_CLEARING = "stripe_clearing", "Stripe clearing"
        BANK_TRANSFER_CLEARING = "bank_transfer_clearing", "Bank transfer clearing"
        BREAKAGE = "breakage", "Breakage (expired value)"
        PROMOTION_EXPENSE = "promotion_expense", "Promotional credit expense"
        PAYOUTS_IN_TRANSIT = "payouts_in_transit", "Provider payouts sent to the bank, not yet settled"
        CASH = "cash", "The platform's bank account: payouts out, issuers' claim payments in"
        CLAIM_REBILL = "claim_rebill", "Rejected voucher claim lines to bill back to a buyer"
        VAT_PAYABLE = "vat_payable", "Output VAT payable to the tax office"
        DEPOSIT_PAYABLE = "deposit_payable", "Resale revenue owed to depositors, paid as bank credit"

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(
        "organizations.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="accounts"
    )
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    currency = models.CharField(max_length=3, default="CNY")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "purpose", "currency"],
                condition=Q(organization__isnull=False),
                name="account_unique",
            ),
            models.UniqueConstraint(
                fields=["purpose", "currency"], condition=Q(organization__isnull=True), name="platform_account_unique"
            ),
        ]

    def __str__(self) -> str:
        owner = self.organization.slug if self.organization_id else "platform"  # type: ignore[union-attr]
        return f"{owner}:{self.purpose}:{self.currency}"


class JournalEntry(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=48)
    description = models.CharField(max_length=300)
    reference = models.CharField(max_length=100, db_index=True, help_text="What it is for, e.g. invoice:<id>.")
    reverses = models.OneToOneField("self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by")
    posted_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["posted_at"]
        verbose_name_plural = "journal entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.reference} at {self.posted_at:%Y-%m-%d %H:%M}"


class Leg(models.Model):
    id = models.BigAutoField(primary_key=True)
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="legs")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="legs")
    amount = models.BigIntegerField(help_text="Fen: positive debits, negative credits.")
    currency = models.CharField(max_length=3, default="CNY")

    class Meta:
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="leg_amount_not_zero")]
        indexes = [models.Index(fields=["account", "entry"], name="leg_account_idx")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.amount:+d} {self.currency}"
