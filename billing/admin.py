"""Operators' pages for the compute bank: a buyer's mode (prepaid or postpaid), promotional
credit granted through the service, and the bank's records, read-only; and the Stripe webhooks
that were signed but could not be processed, as received."""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext

from billing.models import (
    Bank,
    BankEvent,
    BankMovement,
    CreditGrant,
    CreditHold,
    FapiaoRequest,
    TopUp,
    UnprocessableWebhook,
)
from billing.services.bank.grants import grant_create
from core.money import format_yuan, yuan_to_fen
from organizations.models import Organization


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Bank)
class BankAdmin(admin.ModelAdmin):
    list_display = ["organization", "mode", "low_balance_threshold", "auto_top_up_threshold", "auto_top_up_amount"]
    list_filter = ["mode"]
    search_fields = ["organization__slug", "organization__legal_name"]
    fields = ["organization", "mode", "low_balance_threshold", "auto_top_up_threshold", "auto_top_up_amount"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["organization"] if obj else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "organization":
            kwargs["queryset"] = Organization.objects.filter(kind=Organization.Kind.BUYER)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class GrantForm(forms.ModelForm):
    """Credit the platform gives a buyer: a promotion, or a refund as credit."""

    amount_yuan = forms.DecimalField(label="Amount (yuan)", max_digits=15, decimal_places=2, min_value=Decimal("0.01"))
    source = forms.ChoiceField(
        choices=[(s.value, s.label) for s in (CreditGrant.Source.PROMOTION, CreditGrant.Source.REFUND)]
    )

    class Meta:
        model = CreditGrant
        fields = ["buyer", "source", "expires_at", "priority", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buyer_field: Any = self.fields["buyer"]
        buyer_field.queryset = Organization.objects.filter(kind=Organization.Kind.BUYER)

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError(
                gettext("Give a time in the future, or leave it empty for credit that never expires.")
            )
        return expires_at

    def _post_clean(self) -> None:
        """The service makes and checks the grant; the model's own validation would refuse the missing amounts."""


@admin.register(CreditGrant)
class CreditGrantAdmin(admin.ModelAdmin):
    list_display = ["buyer", "source", "amount_yuan", "remaining_yuan", "expires_at", "priority", "created_at"]
    list_filter = ["source"]
    search_fields = ["buyer__slug", "note"]
    readonly_fields = [
        "buyer", "source", "amount", "remaining", "currency", "expires_at", "priority", "note", "granted_by",
        "created_at",
    ]  # fmt: skip

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = GrantForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["buyer", "source", "amount_yuan", "expires_at", "priority", "note"]
        return self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj else []

    def save_model(self, request: HttpRequest, obj: CreditGrant, form: Any, change: bool) -> None:
        data = form.cleaned_data
        grant = grant_create(
            buyer=data["buyer"],
            source=data["source"],
            amount=yuan_to_fen(data["amount_yuan"]),
            expires_at=data.get("expires_at"),
            priority=data["priority"] if data.get("priority") is not None else 100,
            note=data.get("note") or "",
            by=f"admin:{request.user}",
        )
        obj.pk = grant.pk

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Amount")
    def amount_yuan(self, grant: CreditGrant) -> str:
        return format_yuan(grant.amount)

    @admin.display(description="Remaining")
    def remaining_yuan(self, grant: CreditGrant) -> str:
        return format_yuan(grant.remaining)


@admin.register(BankMovement)
class BankMovementAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "buyer", "reason", "amount", "reference", "entry"]
    list_filter = ["reason"]
    search_fields = ["buyer__slug", "reference"]


@admin.register(CreditHold)
class CreditHoldAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "buyer", "lease", "amount", "status", "warned_at", "released_at"]
    list_filter = ["status"]


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "buyer", "amount", "currency", "status", "automatic", "payment_intent_id"]
    list_filter = ["status", "automatic"]
    search_fields = ["buyer__slug", "payment_intent_id"]


@admin.register(BankEvent)
class BankEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "buyer", "kind", "message"]
    list_filter = ["kind"]


@admin.register(UnprocessableWebhook)
class UnprocessableWebhookAdmin(ReadOnlyAdmin):
    list_display = ["last_received_at", "deliveries", "error"]
    fields = readonly_fields = ("received_at", "last_received_at", "deliveries", "digest", "error", "body_text")

    @admin.display(description="Body (as UTF-8, undecodable bytes replaced)")
    def body_text(self, webhook: UnprocessableWebhook) -> str:
        return bytes(webhook.body).decode("utf-8", errors="replace")


@admin.register(FapiaoRequest)
class FapiaoRequestAdmin(ReadOnlyAdmin):
    """Read-only: fapiao are recorded through the API (``fapiao-requests/{id}/issue/``), audited."""

    list_display = ["requested_at", "invoice", "buyer", "kind", "status", "number", "red_number"]
    list_filter = ["status", "kind"]
    search_fields = ["number", "red_number", "taxpayer_id", "title", "invoice__number", "buyer__slug"]
    exclude = ["file", "red_file"]
