from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import (
    Bank,
    BankEvent,
    BankMovement,
    CreditGrant,
    FapiaoRequest,
    Invoice,
    InvoiceLine,
    TopUp,
    UsageMetric,
)
from billing.reservations import BOOKED_METRIC, deposits_earned
from billing.token_electricity import provider_electricity_per_million
from core.money import format_yuan
from core.serializers import CurrencyField, MoneyField, PriceField, StrictSerializer
from marketplace.serializers import DepositSerializer

_PRICE = PriceField()

MAX_USAGE_RANGE = {"hour": timedelta(days=31), "day": timedelta(days=366)}


class UsageEventsBodySerializer(serializers.Serializer):
    """Documents the body of a usage report; billing.schema describes it, billing.cloudevents reads it."""


class IngestErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in the request.")
    id = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    message = serializers.CharField()


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    errors = IngestErrorSerializer(many=True)  # type: ignore[assignment]  # a field, not Serializer.errors


class UsageQuerySerializer(StrictSerializer):
    lease = serializers.UUIDField(required=False)
    pool = serializers.UUIDField(required=False)
    metric = serializers.ChoiceField(choices=UsageMetric.choices, required=False)
    granularity = serializers.ChoiceField(choices=["hour", "day"], default="hour")
    start = serializers.DateTimeField(required=False, help_text="From (inclusive); default 24 hours ago.")
    end = serializers.DateTimeField(required=False, help_text="To (exclusive); default now.")

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"], fields["to"] = fields.pop("start"), fields.pop("end")
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        end = attrs.pop("to", None) or timezone.now()
        start = attrs.pop("from", None) or end - timedelta(days=1)
        if start >= end:
            raise serializers.ValidationError({"to": [gettext("'to' must come after 'from'.")]}, code="range_reversed")
        limit = MAX_USAGE_RANGE[attrs["granularity"]]
        if end - start > limit:
            raise serializers.ValidationError(
                {
                    "from": [
                        gettext("At most %(days)s days at %(granularity)s granularity; narrow the range.")
                        % {"days": limit.days, "granularity": attrs["granularity"]}
                    ]
                },
                code="range_too_long",
            )
        return {**attrs, "start": start, "end": end}


class UsageRowSerializer(serializers.Serializer):
    lease = serializers.UUIDField()
    pool = serializers.UUIDField()
    metric = serializers.ChoiceField(choices=UsageMetric.choices)
    model = serializers.CharField(help_text="Token model; empty for card-seconds.")
    period_start = serializers.DateTimeField()
    quantity = serializers.DecimalField(max_digits=24, decimal_places=6)
    events = serializers.IntegerField()


# An invoice line bills a usage metric, or a reserved lease's booked card-seconds (used or not).
INVOICE_LINE_METRICS = [*UsageMetric.choices, (BOOKED_METRIC, "Booked card-seconds of a reserved lease")]


class InvoiceLineSerializer(serializers.Serializer):
    id = serializers.UUIDField(allow_null=True, help_text="Null on a draft: its lines are rated live.")
    kind = serializers.ChoiceField(choices=InvoiceLine.Kind.choices)
    lease = serializers.UUIDField(source="lease_id")
    pool = serializers.UUIDField(source="pool_id")
    metric = serializers.ChoiceField(choices=INVOICE_LINE_METRICS)
    model = serializers.CharField()
    band = serializers.CharField()
    unit = serializers.ChoiceField(choices=InvoiceLine.Unit.choices)
    quantity = serializers.DecimalField(max_digits=24, decimal_places=10)
    rate = PriceField(help_text="Per unit: card-hour or million tokens; rated exactly, shown to 4 places.")
    amount = MoneyField(help_text="Tax-inclusive: quantity x rate, rounded once.")
    amount_without_tax = MoneyField(help_text="amount - tax.")
    vat_rate = serializers.DecimalField(
        max_digits=5, decimal_places=4, help_text="VAT rate of the line's service kind, e.g. 0.0600."
    )
    tax = MoneyField(help_text="VAT in amount: round_half_up(amount x rate / (1 + rate)) to the fen.")
    voucher_amount = MoneyField()
    description = serializers.CharField(
        default="", help_text="Why an adjustment is billed, e.g. a voucher claim line the issuer rejected."
    )
    electricity_cost_per_million_tokens = serializers.SerializerMethodField(
        help_text="Of a token line: its order's electricity cost per million tokens in the period (an estimate)."
    )

    @extend_schema_field(PriceField(allow_null=True))
    def get_electricity_cost_per_million_tokens(self, line: Any) -> str | None:
        rate = getattr(line, "electricity_cost_per_million_tokens", None)
        return None if rate is None else _PRICE.to_representation(rate)


class FapiaoSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=FapiaoRequest.Kind.choices)
    status = serializers.ChoiceField(choices=FapiaoRequest.Status.choices)
    number = serializers.CharField(help_text=_("Empty until issued."))
    code = serializers.CharField(help_text=_("Empty for a fully digitized fapiao (20-digit number)."))
    issued_on = serializers.DateField(allow_null=True)
    red_number = serializers.CharField(help_text=_("The red-letter fapiao that reversed it; empty if none."))
    red_issued_on = serializers.DateField(allow_null=True)


class InvoiceSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField(allow_null=True)
    buyer = serializers.CharField(source="buyer.slug")
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=Invoice.Status.choices)
    collection_method = serializers.ChoiceField(choices=Invoice.CollectionMethod.choices)
    currency = serializers.CharField()
    subtotal = MoneyField(help_text="Tax-inclusive: the sum of the lines' amounts.")
    subtotal_without_tax = MoneyField(help_text="subtotal - tax.")
    tax = MoneyField(help_text="VAT: the sum of the lines' taxes.")
    voucher_credit = MoneyField()
    bank_credit = MoneyField()
    amount_due = MoneyField()
    amount_paid = MoneyField()
    amount_refunded = MoneyField(help_text="Of amount_paid, what goes back to the buyer (voided, or paid twice).")
    payment_attempts = serializers.IntegerField()
    next_payment_attempt_at = serializers.DateTimeField(allow_null=True)
    finalized_at = serializers.DateTimeField(allow_null=True)
    paid_at = serializers.DateTimeField(allow_null=True)
    voided_at = serializers.DateTimeField(allow_null=True)
    lines = InvoiceLineSerializer(many=True, source="shown_lines")
    fapiao = FapiaoSummarySerializer(
        source="current_fapiao", allow_null=True, help_text=_("The latest fapiao requested for it; null if none.")
    )


class InvoicePaySerializer(StrictSerializer):
    payment_method = serializers.CharField(
        max_length=100, required=False, help_text="A Stripe PaymentMethod id to save as the card on file first."
    )


class InvoiceVoidSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=300, required=False, default="", allow_blank=True)


class BankTransferSerializer(StrictSerializer):
    amount = MoneyField(min_value=Decimal("0.01"))
    currency = CurrencyField()


class StatementSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    currency = serializers.CharField()
    gross = MoneyField(help_text="Tax-inclusive: the provider's invoice lines of the period.")
    gross_without_tax = MoneyField(help_text="gross - tax.")
    tax = MoneyField(help_text="VAT in gross: the sum of the taxes of those lines.")
    commission = MoneyField()
    net = MoneyField(help_text="Net payable to the provider.")
    electricity_cost_per_million_tokens = serializers.SerializerMethodField(
        help_text="Of the provider's model endpoints in the period: electricity over the tokens served (an estimate)."
    )

    @extend_schema_field(PriceField(allow_null=True))
    def get_electricity_cost_per_million_tokens(self, statement: Any) -> str | None:
        rate = provider_electricity_per_million(
            provider_id=statement.provider_id, since=statement.period_start, until=statement.period_end
        )
        return None if rate is None else _PRICE.to_representation(rate)


class GrantSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    source = serializers.ChoiceField(choices=CreditGrant.Source.choices)  # type: ignore[assignment]  # a field, not Field.source
    amount = MoneyField()
    remaining = MoneyField()
    expires_at = serializers.DateTimeField(allow_null=True, help_text="Null: never expires.")
    priority = serializers.IntegerField(help_text="Among grants expiring together, lower is spent first.")
    created_at = serializers.DateTimeField()


class HoldSerializer(serializers.Serializer):
    lease = serializers.UUIDField(source="lease_id")
    amount = MoneyField(help_text="Reserved in all for the lease.")
    held = MoneyField(help_text="Still reserved: the amount less the lease's usage so far.")
    warned_at = serializers.DateTimeField(allow_null=True, help_text="Set while the next horizon is not covered.")
    created_at = serializers.DateTimeField()


class BankEventSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=BankEvent.Kind.choices)
    message = serializers.CharField()
    lease = serializers.UUIDField(source="lease_id", allow_null=True)
    created_at = serializers.DateTimeField()


class BankSerializer(serializers.Serializer):
    currency = serializers.CharField()
    mode = serializers.ChoiceField(choices=Bank.Mode.choices, help_text="Set by an operator.")
    balance = MoneyField(help_text="What is left of the grants that have not expired.")
    held = MoneyField(help_text="Reserved for running leases beyond their usage so far (prepaid).")
    pending_usage = MoneyField(help_text="Usage not yet invoiced; the month's invoice draws it from the bank.")
    available = MoneyField(help_text="balance - held - pending_usage; negative if usage ran ahead of the holds.")
    low_balance_threshold = MoneyField()
    auto_top_up_threshold = MoneyField(allow_null=True)
    auto_top_up_amount = MoneyField(allow_null=True)
    grants = GrantSerializer(many=True, help_text="Spendable grants, in the order they are spent.")
    holds = HoldSerializer(many=True)
    events = BankEventSerializer(many=True, help_text="The latest 20 events: low balance, warned or ended leases.")


class BankSettingsSerializer(StrictSerializer):
    """A buyer's thresholds; a field left out keeps its value, null clears it."""

    rules: ClassVar[dict[str, str]] = {
        "auto_top_up_incomplete": (
            "`auto_top_up_threshold` and `auto_top_up_amount` are set together or cleared together "
            "(after the change, both or neither)"
        ),
    }

    low_balance_threshold = MoneyField(min_value=Decimal("0"), allow_null=True, required=False)
    auto_top_up_threshold = MoneyField(min_value=Decimal("0"), allow_null=True, required=False)
    auto_top_up_amount = MoneyField(min_value=Decimal("0.01"), allow_null=True, required=False)


class BankMovementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    reason = serializers.ChoiceField(choices=BankMovement.Reason.choices)
    amount = MoneyField(help_text="Positive adds credit, negative takes it.")
    currency = serializers.CharField(source="grant.currency")
    grant = serializers.UUIDField(source="grant_id")
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=CreditGrant.Source.choices, source="grant.source", help_text="The grant's source."
    )
    reference = serializers.CharField(help_text="What it is for: invoice:<id>, top-up:<id>, grant:<id>.")
    ledger_entry = serializers.UUIDField(source="entry_id", help_text="The journal entry that booked it.")


class TopUpCreateSerializer(StrictSerializer):
    amount = MoneyField(
        help_text=(
            "More than 0.00 (else 400 `invalid_amount`) and at most BANK_TOP_UP_MAX_YUAN, 1,000,000.00 by "
            "default (else 400 `amount_too_large`)."
        )
    )
    currency = serializers.CharField(max_length=3, default="CNY")


class TopUpSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    amount = MoneyField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=TopUp.Status.choices)
    payment_intent = serializers.CharField(source="payment_intent_id", allow_null=True)
    client_secret = serializers.CharField(
        required=False, help_text="Confirm the PaymentIntent with it (Stripe.js); only in the answer that made it."
    )
    created_at = serializers.DateTimeField()


class FapiaoRequestSerializer(FapiaoSummarySerializer):
    invoice = serializers.UUIDField(source="invoice_id")
    invoice_number = serializers.CharField(source="invoice.number")
    buyer = serializers.CharField(source="buyer.slug")
    title = serializers.CharField()
    taxpayer_id = serializers.CharField()
    address = serializers.CharField()
    phone = serializers.CharField()
    bank_name = serializers.CharField()
    bank_account = serializers.CharField()
    amount = MoneyField(help_text=_("The invoice's subtotal, tax included."))
    tax = MoneyField()
    currency = serializers.CharField()
    requested_at = serializers.DateTimeField()
    issued_at = serializers.DateTimeField(allow_null=True)
    reversed_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)
    has_file = serializers.SerializerMethodField()
    has_red_letter_file = serializers.SerializerMethodField()

    def get_has_file(self, request: FapiaoRequest) -> bool:
        return request.file_id is not None

    def get_has_red_letter_file(self, request: FapiaoRequest) -> bool:
        return request.red_file_id is not None


class FapiaoRequestCreateSerializer(StrictSerializer):
    kind = serializers.ChoiceField(
        choices=FapiaoRequest.Kind.choices,
        help_text=_("`special` needs address, phone, bank and account in the invoicing details."),
    )


class FapiaoRecordSerializer(StrictSerializer):
    number = serializers.CharField(max_length=20, help_text=_("8 digits, or 20 for a fully digitized fapiao."))
    code = serializers.CharField(
        max_length=12, required=False, default="", allow_blank=True, help_text=_("10 or 12 digits; empty with 20.")
    )
    issued_on = serializers.DateField()
    file = serializers.FileField(
        max_length=200,
        help_text=_("The fapiao as the tax system gave it: PDF, OFD or XML, at most FAPIAO_FILE_MAX_BYTES (5 MB)."),
    )


class DepositEarnings:
    """Each deposit's resold card-hours and credit, read once per page (``deposits_earned``)."""

    def __init__(self) -> None:
        self.cache: dict[Any, tuple[Decimal, int]] | None = None

    def of(self, deposit: Any, page: Any) -> tuple[Decimal, int]:
        if self.cache is None:
            ids = [d.pk for d in page] if page is not None else [deposit.pk]
            self.cache = deposits_earned(ids)
        return self.cache.get(deposit.pk, (Decimal(0), 0))


class BankDepositSerializer(DepositSerializer):
    """A deposit with what it earned: card-hours resold (on finalized invoices) and credit granted."""

    hours_resold = serializers.SerializerMethodField(help_text="Card-hours other buyers used, billed so far.")
    earned = serializers.SerializerMethodField(
        help_text="Yuan granted to the bank (capacity_deposit credit): resale revenue less the platform's share."
    )
    currency = serializers.SerializerMethodField()

    class Meta(DepositSerializer.Meta):
        fields = [*DepositSerializer.Meta.fields, "hours_resold", "earned", "currency"]
        read_only_fields = fields

    def _earned(self, deposit: Any) -> tuple[Decimal, int]:
        page = self.parent.instance if self.parent is not None else None
        return self.context["earned"].of(deposit, page)

    def get_hours_resold(self, deposit: Any) -> str:
        return str(self._earned(deposit)[0].quantize(Decimal("0.01")))

    def get_earned(self, deposit: Any) -> str:
        return format_yuan(self._earned(deposit)[1])

    def get_currency(self, deposit: Any) -> str:
        return "CNY"
