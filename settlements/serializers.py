from decimal import Decimal

from rest_framework import serializers

from core.serializers import MoneyField, StrictSerializer
from settlements.models import ClaimLine, PayoutItem, PayoutLine, PayoutRun, SubsidyClaim


class PayoutAccountSetSerializer(StrictSerializer):
    account_name = serializers.CharField(max_length=200, help_text="The provider's legal name, as the bank has it.")
    bank_name = serializers.CharField(max_length=100)
    branch = serializers.CharField(max_length=100)
    account_number = serializers.RegexField(r"^[0-9]{8,34}$", help_text="Digits only, 8 to 34.")


class PayoutAccountVersionSerializer(serializers.Serializer):
    account_name = serializers.CharField()
    bank_name = serializers.CharField()
    branch = serializers.CharField()
    account_number = serializers.CharField(source="masked_number", help_text="Masked: the last 4 digits.")
    requested_at = serializers.DateTimeField()
    effective_at = serializers.DateTimeField()


class PayoutAccountSerializer(serializers.Serializer):
    current = PayoutAccountVersionSerializer(allow_null=True)
    pending = PayoutAccountVersionSerializer(allow_null=True, help_text="A change in its cooling-off period.")


class PayoutRunCreateSerializer(StrictSerializer):
    period = serializers.RegexField(
        r"^2[0-9]{3}-(0[1-9]|1[0-2])$", help_text="YYYY-MM: that month's invoices and earlier."
    )


class PayoutItemSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=PayoutItem.Kind.choices)
    invoice = serializers.UUIDField(source="invoice_id")
    invoice_number = serializers.CharField(source="invoice.number")
    statement = serializers.UUIDField(source="statement_id")
    statement_period = serializers.DateTimeField(source="statement.period_start")
    amount = MoneyField()


class PayoutLineSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.IntegerField()
    reference = serializers.CharField()
    provider = serializers.CharField(source="provider.slug")
    account_number = serializers.CharField(source="account.masked_number")
    amount = MoneyField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=PayoutLine.Status.choices)
    failure_reason = serializers.CharField()
    settled_at = serializers.DateTimeField(allow_null=True)
    items = PayoutItemSerializer(many=True, help_text="The invoices' shares it pays, and the statements they are of.")


class PayoutRunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=PayoutRun.Status.choices)
    currency = serializers.CharField()
    total = MoneyField()
    minimum = MoneyField()
    reserve_rate = serializers.DecimalField(max_digits=5, decimal_places=4)
    carried_forward = serializers.JSONField()
    checksum = serializers.CharField(help_text="SHA-256 of the bank batch CSV, hex.")
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    settled_at = serializers.DateTimeField(allow_null=True)
    lines = PayoutLineSerializer(many=True)


class PayoutLineSettleSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=["paid", "failed"])
    reason = serializers.CharField(max_length=300, required=False, default="", allow_blank=True)


class ReturnFileSerializer(StrictSerializer):
    content = serializers.CharField(max_length=1_000_000, help_text="The bank's return file (docs/payouts.md).")


class ClaimLineSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ClaimLine.Status.choices)
    reason_code = serializers.CharField()
    reason = serializers.CharField()
    invoice_number = serializers.CharField(allow_null=True)
    company = serializers.CharField()
    company_credit_code = serializers.CharField()
    company_taxpayer_id = serializers.CharField(help_text="As the company's fapiao carry it (its invoicing details).")
    fapiao_numbers = serializers.CharField(
        help_text="The fapiao issued for the invoice (code-number; a reversed one with its red-letter fapiao)."
    )
    company_province = serializers.CharField()
    provider = serializers.CharField()
    pool = serializers.CharField()
    hub = serializers.CharField()
    gpu_model = serializers.CharField()
    usage_quantity = serializers.DecimalField(max_digits=24, decimal_places=10, allow_null=True)
    usage_unit = serializers.CharField()
    usage_start = serializers.DateTimeField()
    usage_end = serializers.DateTimeField()
    line_amount = MoneyField()
    voucher_share = MoneyField()


class ClaimSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField()
    program = serializers.UUIDField(source="program_id")
    program_name = serializers.CharField(source="program.name")
    issuer = serializers.CharField(source="issuer.slug")
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=SubsidyClaim.Status.choices)
    currency = serializers.CharField()
    claimed = MoneyField()
    approved = MoneyField()
    rejected = MoneyField()
    withdrawn = MoneyField()
    received = MoneyField()
    due = MoneyField(help_text="Approved, not received yet.")
    overdue = serializers.BooleanField()
    reviewed_at = serializers.DateTimeField(allow_null=True)
    due_at = serializers.DateTimeField(allow_null=True)


class ClaimDetailSerializer(ClaimSerializer):
    lines = ClaimLineSerializer(many=True, source="evidence")


class ClaimRejectionSerializer(StrictSerializer):
    line = serializers.UUIDField()
    reason_code = serializers.ChoiceField(choices=ClaimLine.Reason.choices)
    reason = serializers.CharField(max_length=300, required=False, default="", allow_blank=True)


class ClaimReviewSerializer(StrictSerializer):
    approve_all = serializers.BooleanField(required=False, default=False)
    reject = ClaimRejectionSerializer(many=True, required=False, default=list)


class ClaimPaymentSerializer(StrictSerializer):
    reference = serializers.CharField(max_length=100, help_text="The bank transfer's reference.")
    amount = MoneyField(min_value=Decimal("0.01"))
