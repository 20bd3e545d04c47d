"""Fapiao (发票): the tax authority's invoice a buyer needs to expense a bill.

A buyer requests one for a finalized or paid invoice; an operator issues it in the tax
system and records it here (number, code, date, the file). Voiding an invoice whose
fapiao was issued needs the red-letter fapiao (红字发票) that reverses it recorded first.
"""

import uuid

from django.db import models
from django.db.models import Q


class FapiaoFile(models.Model):
    """A fapiao's file as the tax system gave it (PDF, OFD or XML), kept in the database with the
    record that refers to it: written in the same transaction, backed up with the books."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    content = models.BinaryField()
    uploaded_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes)"


class FapiaoRequest(models.Model):
    class Kind(models.TextChoices):
        ORDINARY = "ordinary", "Ordinary VAT fapiao (普通发票)"
        SPECIAL = "special", "Special VAT fapiao (专用发票)"

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested: waiting for an operator to issue it"
        ISSUED = "issued", "Issued"
        REVERSED = "reversed", "Reversed by a red-letter fapiao"
        CANCELLED = "cancelled", "Cancelled: its invoice was voided before it was issued"

    ACTIVE = (Status.REQUESTED, Status.ISSUED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="fapiao_requests")
    buyer = models.ForeignKey("organizations.Organization", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    # The buyer's invoicing details when it asked
    title = models.CharField(max_length=200)
    taxpayer_id = models.CharField(max_length=18)
    address = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    bank_name = models.CharField(max_length=200, blank=True)
    bank_account = models.CharField(max_length=40, blank=True)
    # What the fapiao is for: the invoice's subtotal (tax-inclusive) and its VAT, in fen
    amount = models.BigIntegerField()
    tax = models.BigIntegerField()
    currency = models.CharField(max_length=3, default="CNY")
    requested_at = models.DateTimeField()
    requested_by = models.CharField(max_length=200)
    # The fapiao issued
    number = models.CharField(max_length=20, blank=True)
    code = models.CharField(max_length=12, blank=True)
    issued_on = models.DateField(null=True, blank=True)
    file = models.ForeignKey(FapiaoFile, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    issued_at = models.DateTimeField(null=True, blank=True)
    issued_by = models.CharField(max_length=200, blank=True)
    # The red-letter fapiao that reversed it
    red_number = models.CharField(max_length=20, blank=True)
    red_code = models.CharField(max_length=12, blank=True)
    red_issued_on = models.DateField(null=True, blank=True)
    red_file = models.ForeignKey(FapiaoFile, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversed_by = models.CharField(max_length=200, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["requested_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(status__in=["requested", "issued"]),
                name="fapiao_one_active_per_invoice",
            ),
            models.UniqueConstraint(fields=["code", "number"], condition=~Q(number=""), name="fapiao_number_unique"),
            models.CheckConstraint(
                condition=Q(status="requested") | Q(status="cancelled") | (~Q(number="") & Q(issued_on__isnull=False)),
                name="fapiao_issued_has_number",
            ),
            models.CheckConstraint(
                condition=~Q(status="reversed") | (~Q(red_number="") & Q(red_issued_on__isnull=False)),
                name="fapiao_reversed_has_red_letter",
            ),
            models.CheckConstraint(condition=Q(kind__in=["ordinary", "special"]), name="fapiao_kind_valid"),
        ]
        indexes = [models.Index(fields=["status", "requested_at"], name="fapiao_waiting_idx")]

    def __str__(self) -> str:
        return f"{self.kind} fapiao {self.number or '(requested)'} for {self.invoice_id}"
