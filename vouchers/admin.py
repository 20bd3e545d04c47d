"""Operators' pages: they create programs and issue vouchers on an issuer's behalf, through the
same services as the API; vouchers and redemptions are never edited by hand."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError
from core.money import format_yuan, yuan_to_fen
from organizations.models import Organization
from pools.models import GpuModel, Hub
from pools.serializers import PROVINCES
from vouchers import services
from vouchers.issuing import VoucherRequest, buyer_refusal, check_program_issuable, row_problems
from vouchers.models import Redemption, Reversal, Voucher, VoucherProgram, Workload


def _yuan_field(label: str) -> forms.DecimalField:
    return forms.DecimalField(label=label, max_digits=15, decimal_places=2, min_value=Decimal("0.01"))


def _codes(value: Any, known: set[str], what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise forms.ValidationError(gettext("Give a JSON list of %(what)s, or [] for any.") % {"what": what})
    unknown = sorted(set(value) - known) if known else []
    if unknown:
        raise forms.ValidationError(gettext("Unknown %(what)s: %(join)s.") % {"what": what, "join": ", ".join(unknown)})
    return value


class ProgramAddForm(forms.ModelForm):
    budget_yuan = _yuan_field("Budget (yuan)")
    per_company_yearly_cap_yuan = _yuan_field("Yearly cap per company (yuan)")

    class Meta:
        model = VoucherProgram
        fields = [
            "issuer",
            "name",
            "coverage_share",
            "valid_from",
            "valid_until",
            "provinces",
            "cities",
            "sme_only",
            "hubs",
            "gpu_models",
            "workloads",
            "providers",
        ]

    def clean_issuer(self) -> Organization:
        issuer = self.cleaned_data["issuer"]
        if issuer.kind != Organization.Kind.ISSUER:
            raise forms.ValidationError(
                gettext("%(slug)s is a %(kind)s, not an issuer.") % {"slug": issuer.slug, "kind": issuer.kind}
            )
        return issuer

    def clean_provinces(self) -> list[str]:
        return _codes(self.cleaned_data["provinces"], set(PROVINCES), "provinces")

    def clean_cities(self) -> list[str]:
        return _codes(self.cleaned_data["cities"], set(), "cities")

    def clean_hubs(self) -> list[str]:
        return _codes(self.cleaned_data["hubs"], set(Hub.objects.values_list("code", flat=True)), "hub codes")

    def clean_gpu_models(self) -> list[str]:
        return _codes(
            self.cleaned_data["gpu_models"], set(GpuModel.objects.values_list("code", flat=True)), "GPU model codes"
        )

    def clean_workloads(self) -> list[str]:
        return _codes(self.cleaned_data["workloads"], set(Workload.values), "workloads")

    def clean_providers(self) -> Any:
        providers = self.cleaned_data["providers"]
        others = [provider.slug for provider in providers if provider.kind != Organization.Kind.PROVIDER]
        if others:
            raise forms.ValidationError(gettext("Not providers: %(join)s.") % {"join": ", ".join(others)})
        return providers

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("valid_until") and data["valid_until"] <= timezone.now():
            self.add_error("valid_until", "The program would already be over.")
        return data


def _run_each(
    admin_view: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], action: Callable[..., Any]
) -> None:
    done, refused = 0, []
    for obj in queryset.order_by("pk"):
        try:
            action(obj)
            done += 1
        except ApplicationError as exc:
            refused.append(f"{obj}: {exc.message}")
    admin_view.message_user(
        request,
        f"{done} changed." + (f" Refused: {'; '.join(refused)}" if refused else ""),
        messages.WARNING if refused else messages.SUCCESS,
    )


@admin.register(VoucherProgram)
class VoucherProgramAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "issuer",
        "status",
        "budget_yuan",
        "committed_yuan",
        "left_yuan",
        "coverage_share",
        "cap_yuan",
        "valid_from",
        "valid_until",
    ]
    list_filter = ["status", "sme_only"]
    search_fields = ["name", "issuer__slug", "issuer__legal_name"]
    list_select_related = ["issuer"]
    autocomplete_fields = ["issuer", "providers"]
    actions = ["open_programs", "close_programs"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ProgramAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            issuer_and_name, terms = ProgramAddForm.Meta.fields[:2], ProgramAddForm.Meta.fields[2:]
            return [*issuer_and_name, "budget_yuan", "per_company_yearly_cap_yuan", *terms]
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        # Terms cannot change under vouchers already granted; only the name is edited here.
        concrete = [
            field.name for field in VoucherProgram._meta.get_fields() if field.concrete and field.name != "name"
        ]
        return [*concrete, "providers"]

    def save_model(self, request: HttpRequest, obj: VoucherProgram, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        data = form.cleaned_data
        program = services.program_create(
            issuer=data["issuer"],
            name=data["name"],
            budget=yuan_to_fen(data["budget_yuan"]),
            coverage_share=data["coverage_share"],
            per_company_yearly_cap=yuan_to_fen(data["per_company_yearly_cap_yuan"]),
            valid_from=data["valid_from"],
            valid_until=data["valid_until"],
            provinces=data["provinces"],
            cities=data["cities"],
            sme_only=data["sme_only"],
            hubs=data["hubs"],
            gpu_models=data["gpu_models"],
            workloads=data["workloads"],
            providers=list(data["providers"]),
            by=f"admin:{request.user}",
        )
        obj.pk = program.pk

    @admin.display(description="budget")
    def budget_yuan(self, program: VoucherProgram) -> str:
        return format_yuan(program.budget)

    @admin.display(description="committed")
    def committed_yuan(self, program: VoucherProgram) -> str:
        return format_yuan(program.committed)

    @admin.display(description="left")
    def left_yuan(self, program: VoucherProgram) -> str:
        return format_yuan(program.budget_left)

    @admin.display(description="yearly cap")
    def cap_yuan(self, program: VoucherProgram) -> str:
        return format_yuan(program.per_company_yearly_cap)

    @admin.action(description="Open the selected draft programs")
    def open_programs(self, request: HttpRequest, queryset: QuerySet[VoucherProgram]) -> None:
        _run_each(self, request, queryset, lambda p: services.program_open(program=p, by=f"admin:{request.user}"))

    @admin.action(description="Close the selected programs")
    def close_programs(self, request: HttpRequest, queryset: QuerySet[VoucherProgram]) -> None:
        _run_each(self, request, queryset, lambda p: services.program_close(program=p, by=f"admin:{request.user}"))


class VoucherIssueForm(forms.ModelForm):
    face_value_yuan = _yuan_field("Face value (yuan)")

    class Meta:
        model = Voucher
        fields = ["program", "buyer", "valid_until"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["valid_until"].required = False
        self.fields["valid_until"].help_text = "Empty: the program's end."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        program, buyer, face = data.get("program"), data.get("buyer"), data.get("face_value_yuan")
        if program is None or buyer is None or face is None:
            return data
        now = timezone.now()
        try:
            check_program_issuable(program, now)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None
        refusal = buyer_refusal(program, buyer)
        if refusal is not None:
            self.add_error("buyer", refusal["message"])
        request = VoucherRequest(organization=buyer, face_value=yuan_to_fen(face), valid_until=data.get("valid_until"))
        for field, problems in row_problems(program=program, requests=[(0, request)], now=now).get(0, {}).items():
            if field != "organization":
                self.add_error(field if field in self.fields else None, problems[0]["message"])
        if request.face_value > program.budget_left:
            self.add_error("face_value_yuan", f"The program has {format_yuan(program.budget_left)} left.")
        self.voucher_request = request
        return data

    def _post_clean(self) -> None:
        pass  # the voucher is built and checked by vouchers_issue, not by the model form


class RedemptionInline(admin.TabularInline):
    model = Redemption
    extra = 0
    fields = ("invoice_ref", "line_ref", "lease_id", "provider", "hub", "period_start", "amount", "redeemed_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Voucher)
class VoucherAdmin(admin.ModelAdmin):
    list_display = ["code", "buyer", "program", "status", "face_yuan", "remaining_yuan", "valid_until"]
    list_filter = ["status", "program__issuer"]
    search_fields = ["code", "buyer__slug", "buyer__legal_name", "program__name"]
    list_select_related = ["buyer", "program"]
    autocomplete_fields = ["program", "buyer"]
    inlines = [RedemptionInline]
    actions = ["revoke_vouchers"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = VoucherIssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["program", "buyer", "face_value_yuan", "valid_until"]
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        # Not transferable, and its values change only through redemption, reversal and expiry.
        return [field.name for field in Voucher._meta.get_fields() if field.concrete]

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Voucher, form: Any, change: bool) -> None:
        if change:
            return
        (voucher,) = services.vouchers_issue(
            program=form.cleaned_data["program"], requests=[form.voucher_request], by=f"admin:{request.user}"
        )
        obj.pk, obj.code = voucher.pk, voucher.code

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="face value")
    def face_yuan(self, voucher: Voucher) -> str:
        return format_yuan(voucher.face_value)

    @admin.display(description="remaining")
    def remaining_yuan(self, voucher: Voucher) -> str:
        return format_yuan(voucher.remaining)

    @admin.action(description="Revoke the selected vouchers")
    def revoke_vouchers(self, request: HttpRequest, queryset: QuerySet[Voucher]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda v: services.voucher_revoke(voucher=v, by=f"admin:{request.user}", reason="revoked by an operator"),
        )


class ReversalInline(admin.StackedInline):
    model = Reversal
    fields = ("reversed_at", "amount", "returned", "breakage", "rejected")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Redemption)
class RedemptionAdmin(admin.ModelAdmin):
    list_display = ["redeemed_at", "voucher", "buyer", "provider", "hub", "invoice_ref", "line_ref", "amount_yuan"]
    list_filter = ["hub", "workload", "program"]
    search_fields = ["invoice_ref", "line_ref", "lease_id", "voucher__code", "buyer__slug"]
    list_select_related = ["voucher", "buyer", "provider"]
    date_hierarchy = "redeemed_at"
    inlines = [ReversalInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [field.name for field in Redemption._meta.get_fields() if field.concrete]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a record of what was paid: viewed, never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="amount")
    def amount_yuan(self, redemption: Redemption) -> str:
        return format_yuan(redemption.amount)
