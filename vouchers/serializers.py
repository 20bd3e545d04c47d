import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.exceptions import PayloadTooLarge
from core.serializers import CurrencyField, MoneyField, StrictSerializer
from organizations.models import Organization
from pools.models import GpuModel, Hub
from pools.serializers import PROVINCES
from vouchers.issuing import (
    MAX_VOUCHERS_PER_REQUEST,
    VoucherRequest,
    VouchersRefused,
    check_program_issuable,
    row_problems,
)
from vouchers.models import Redemption, Voucher, VoucherProgram, Workload

MAX_CITIES = 1000
MAX_PROVIDERS = 1000


@extend_schema_field(OpenApiTypes.STR)
class OrganizationRefField(serializers.Field):
    """An organization named by its id or its slug; shown as its slug.

    ``context["organizations"]`` may hold them already looked up (a bulk issue
    looks up all its rows' organizations in one query).
    """

    default_error_messages = {
        "invalid": gettext_lazy("Give an organization's id or slug."),
        "not_found": gettext_lazy("No organization has this id or slug."),
        "wrong_kind": gettext_lazy("This organization is a {kind}, not a {expected}."),
    }

    def __init__(self, *, kind: str | None = None, **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Organization:
        if not isinstance(data, str) or not 0 < len(data) <= 64:
            self.fail("invalid")
        known: Mapping[str, Organization] = self.context.get("organizations", {})
        key = _ref_key(data)
        organization = known.get(key) or organizations_by_ref([data]).get(key)
        if organization is None:
            self.fail("not_found")
        if self.kind is not None and organization.kind != self.kind:
            self.fail("wrong_kind", kind=organization.kind, expected=self.kind)
        return organization

    def to_representation(self, value: Organization) -> str:
        return value.slug


def _ref_key(ref: str) -> str:
    """An id in its canonical spelling; a slug as it is."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        return ref


def organizations_by_ref(refs: Sequence[Any]) -> dict[str, Organization]:
    """Organizations by the ids or slugs that name them (keyed by ``_ref_key``), in one query."""
    keys = {_ref_key(ref) for ref in refs if isinstance(ref, str) and 0 < len(ref) <= 64}
    ids = set()
    for key in keys:
        try:
            ids.add(uuid.UUID(key))
        except ValueError:
            continue
    found: dict[str, Organization] = {}
    for organization in Organization.objects.filter(Q(pk__in=ids) | Q(slug__in=keys - {str(id_) for id_ in ids})):
        found[organization.slug] = organization
        found[str(organization.pk)] = organization
    return found


def _own_enum(choices: Sequence[str], enum_id: str) -> Any:
    """A choice field whose enum is a schema component of its own: the same values appear
    elsewhere under a singular name (``province``, ``workload``)."""

    @extend_schema_field({"type": "string", "enum": list(choices), "x-spec-enum-id": enum_id})
    class OwnEnumChoiceField(serializers.ChoiceField):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(choices=list(choices), **kwargs)

    return OwnEnumChoiceField


ProvinceChoiceField = _own_enum(PROVINCES, "voucher-provinces")
WorkloadChoiceField = _own_enum(Workload.values, "voucher-workloads")


class UniqueListField(serializers.ListField):
    """A list whose items each appear once."""

    def to_internal_value(self, data: Any) -> list[Any]:
        items = super().to_internal_value(data)
        seen: list[Any] = []
        for item in items:
            if item in seen:
                raise serializers.ValidationError(
                    gettext("%(item)s is listed twice.") % {"item": item}, code="duplicate"
                )
            seen.append(item)
        return items


class ProgramCreateSerializer(StrictSerializer):
    issuer = OrganizationRefField(
        kind=Organization.Kind.ISSUER,
        required=False,
        help_text="Operators only: the issuer (id or slug) the program is created for.",
    )
    name = serializers.CharField(max_length=200)
    currency = CurrencyField()
    budget = MoneyField(min_value=Decimal("0.01"), help_text="The program's budget, yuan.")
    coverage_share = serializers.DecimalField(
        max_digits=5,
        decimal_places=4,
        min_value=Decimal(0),
        max_value=Decimal(1),
        help_text="Share of each eligible bill a voucher pays: above 0, at most 1 (0.2 is 20%).",
    )
    per_company_yearly_cap = MoneyField(
        min_value=Decimal("0.01"),
        help_text="Yuan a company may receive per calendar year across all of this issuer's programs.",
    )
    valid_from = serializers.DateTimeField(required=False, help_text="Default: now.")
    valid_until = serializers.DateTimeField()
    provinces = UniqueListField(
        child=ProvinceChoiceField(),
        required=False,
        max_length=len(PROVINCES),
        help_text="Buyers' provinces; empty: any.",
    )
    cities = UniqueListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=MAX_CITIES,
        help_text="Buyers' cities; empty: any.",
    )
    sme_only = serializers.BooleanField(default=False, help_text="Only small and medium enterprises.")
    hubs = UniqueListField(
        child=serializers.SlugRelatedField(slug_field="code", queryset=Hub.objects.all()),
        required=False,
        max_length=8,
        help_text="Hub codes; empty: any.",
    )
    gpu_models = UniqueListField(
        child=serializers.SlugRelatedField(slug_field="code", queryset=GpuModel.objects.all()),
        required=False,
        max_length=100,
        help_text="GPU model codes; empty: any.",
    )
    providers = UniqueListField(
        child=OrganizationRefField(kind=Organization.Kind.PROVIDER),
        required=False,
        max_length=MAX_PROVIDERS,
        help_text="Approved providers (ids or slugs); empty: any provider not related to the buyer.",
    )
    workloads = UniqueListField(
        child=WorkloadChoiceField(),
        required=False,
        max_length=len(Workload.choices),
        help_text="Workloads; empty: any.",
    )

    def validate_coverage_share(self, value: Decimal) -> Decimal:
        if value == 0:
            raise serializers.ValidationError(gettext("A program pays a share above 0."), code="min_value")
        return value

    rules: ClassVar[dict[str, str]] = {
        "ends_before_start": "`valid_until` after `valid_from` (default now)",
        "in_past": "`valid_until` in the future",
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        now = timezone.now()
        valid_from = attrs.get("valid_from") or now
        if attrs["valid_until"] <= valid_from:
            raise serializers.ValidationError(
                {"valid_until": [gettext("The program must end after it starts.")]}, code="ends_before_start"
            )
        if attrs["valid_until"] <= now:
            raise serializers.ValidationError(
                {"valid_until": [gettext("The program would already be over.")]}, code="in_past"
            )
        attrs["hubs"] = [hub.code for hub in attrs.get("hubs", [])]
        attrs["gpu_models"] = [gpu.code for gpu in attrs.get("gpu_models", [])]
        return attrs


class ProgramSerializer(serializers.ModelSerializer):
    issuer = serializers.SlugRelatedField(slug_field="slug", read_only=True)  # type: ignore[var-annotated]
    budget = MoneyField(read_only=True)
    committed = MoneyField(
        read_only=True,
        help_text="Face values of live vouchers plus what ended vouchers spent, less claim lines the issuer rejected.",
    )
    budget_left = MoneyField(read_only=True, help_text="Budget less committed: what new vouchers may still take.")
    per_company_yearly_cap = MoneyField(read_only=True)
    providers = serializers.SerializerMethodField()

    class Meta:
        model = VoucherProgram
        fields = [
            "id",
            "issuer",
            "name",
            "status",
            "currency",
            "budget",
            "committed",
            "budget_left",
            "coverage_share",
            "per_company_yearly_cap",
            "valid_from",
            "valid_until",
            "provinces",
            "cities",
            "sme_only",
            "hubs",
            "gpu_models",
            "providers",
            "workloads",
            "created_by",
            "created_at",
            "opened_at",
            "closed_at",
        ]
        read_only_fields = fields

    def get_providers(self, program: VoucherProgram) -> list[str]:
        return sorted(provider.slug for provider in program.providers.all())


class VoucherRequestSerializer(StrictSerializer):
    """One voucher to grant."""

    organization = OrganizationRefField(help_text="The buyer (id or slug).")
    face_value = MoneyField(min_value=Decimal("0.01"), help_text="Yuan.")
    valid_until = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Default: the program's end; never after it."
    )

    def request(self) -> VoucherRequest:
        data = self.validated_data
        return VoucherRequest(
            organization=data["organization"], face_value=data["face_value"], valid_until=data.get("valid_until")
        )


def parse_voucher_rows(*, program: VoucherProgram, rows: Sequence[Any], now: datetime) -> list[VoucherRequest]:
    """Each row as a voucher request, or ``VouchersRefused`` (400) naming every bad row by its
    index: malformed rows, and rows that break the program's rules. Nothing is written."""
    check_program_issuable(program, now)
    if not rows:
        raise serializers.ValidationError(gettext("Give at least one voucher."), code="empty")
    if len(rows) > MAX_VOUCHERS_PER_REQUEST:
        raise PayloadTooLarge(
            gettext("At most %(MAX_VOUCHERS_PER_REQUEST)s vouchers in one request; split the list.")
            % {"MAX_VOUCHERS_PER_REQUEST": f"{MAX_VOUCHERS_PER_REQUEST:,}"},
            code="too_many_vouchers",
        )
    refs = [row.get("organization") for row in rows if isinstance(row, dict)]
    context = {"organizations": organizations_by_ref(refs)}
    problems: dict[int, Any] = {}
    parsed: list[tuple[int, VoucherRequest]] = []
    for index, row in enumerate(rows):
        body = VoucherRequestSerializer(data=row, context=context)
        if body.is_valid():
            parsed.append((index, body.request()))
        else:
            problems[index] = serializers.ValidationError(body.errors).get_full_details()
    for index, found in row_problems(program=program, requests=parsed, now=now).items():
        problems[index] = {**found, **problems.get(index, {})}
    if problems:
        raise VouchersRefused(problems, rows=len(rows))
    return [request for _, request in parsed]


class ReversalSerializer(serializers.Serializer):
    reversed_at = serializers.DateTimeField()
    amount = MoneyField()
    returned = MoneyField(help_text="Back on the voucher.")
    breakage = MoneyField(help_text="Released to the budget: the voucher had expired or been revoked.")
    rejected = MoneyField(
        help_text="Released to the budget: the issuer rejected it in its claim review and the company is billed it."
    )


class RedemptionSerializer(serializers.ModelSerializer):
    voucher = serializers.CharField(source="voucher.code", read_only=True)
    invoice = serializers.CharField(source="invoice_ref", read_only=True)
    invoice_line = serializers.CharField(source="line_ref", read_only=True)
    lease = serializers.CharField(source="lease_id", read_only=True)
    pool = serializers.CharField(source="pool_id", read_only=True)
    provider = serializers.SlugRelatedField(slug_field="slug", read_only=True)  # type: ignore[var-annotated]
    line_amount = MoneyField(read_only=True)
    amount = MoneyField(read_only=True)
    reversal = serializers.SerializerMethodField()

    class Meta:
        model = Redemption
        fields = [
            "id",
            "voucher",
            "invoice",
            "invoice_line",
            "lease",
            "pool",
            "provider",
            "hub",
            "gpu_model",
            "workload",
            "period_start",
            "period_end",
            "line_amount",
            "amount",
            "currency",
            "redeemed_at",
            "reversal",
        ]
        read_only_fields = fields

    def get_reversal(self, redemption: Redemption) -> dict[str, Any] | None:
        reversal = getattr(redemption, "reversal", None)
        return ReversalSerializer(reversal).data if reversal is not None else None


class VoucherSerializer(serializers.ModelSerializer):
    program = serializers.UUIDField(source="program_id", read_only=True)
    program_name = serializers.CharField(source="program.name", read_only=True)
    issuer = serializers.CharField(source="program.issuer.slug", read_only=True)
    organization = serializers.SlugRelatedField(source="buyer", slug_field="slug", read_only=True)  # type: ignore[var-annotated]
    coverage_share = serializers.DecimalField(
        source="program.coverage_share", max_digits=5, decimal_places=4, read_only=True
    )
    face_value = MoneyField(read_only=True)
    remaining = MoneyField(read_only=True)
    released = MoneyField(read_only=True, help_text="Given back to the program's budget unused (expiry, revocation).")
    rejected = MoneyField(
        read_only=True,
        help_text="Redemptions the issuer rejected in its claim review: billed back to the company and given back "
        "to the program's budget, never to the voucher.",
    )
    redemptions = RedemptionSerializer(many=True, read_only=True)

    class Meta:
        model = Voucher
        fields = [
            "id",
            "code",
            "program",
            "program_name",
            "issuer",
            "organization",
            "status",
            "currency",
            "coverage_share",
            "face_value",
            "remaining",
            "released",
            "rejected",
            "valid_from",
            "valid_until",
            "created_at",
            "ended_at",
            "end_reason",
            "redemptions",
        ]
        read_only_fields = fields


class RevokeSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


# --- the report ---------------------------------------------------------------


class _Spend(serializers.Serializer):
    redeemed = MoneyField(help_text="Redeemed less reversed.")
    redemptions = serializers.IntegerField()


class _CompanySpend(_Spend):
    organization = serializers.CharField()
    legal_name = serializers.CharField()
    credit_code = serializers.CharField()
    taxpayer_id = serializers.CharField(help_text="As the company's fapiao carry it (its invoicing details).")
    vouchers = serializers.IntegerField()
    granted = MoneyField()
    outstanding = MoneyField()


class _ProviderSpend(_Spend):
    provider = serializers.CharField()
    legal_name = serializers.CharField()


class _ProvinceSpend(_Spend):
    province = serializers.CharField(help_text="The company's province.")


class _HubSpend(_Spend):
    hub = serializers.CharField()


class _MonthSpend(_Spend):
    month = serializers.CharField(help_text="YYYY-MM of the usage, Asia/Shanghai.")


class _VoucherCounts(serializers.Serializer):
    active = serializers.IntegerField()
    exhausted = serializers.IntegerField()
    expired = serializers.IntegerField()
    revoked = serializers.IntegerField()


class ProgramReportSerializer(serializers.Serializer):
    """The issuer's audit of a program. ``granted == redeemed + outstanding + expired + revoked + rejected``
    and ``left == budget - redeemed - outstanding``."""

    program = ProgramSerializer()
    currency = serializers.CharField()
    budget = MoneyField()
    granted = MoneyField(help_text="Face values of every voucher granted.")
    committed = MoneyField(help_text="Redeemed plus outstanding: the budget held by vouchers.")
    redeemed = MoneyField(help_text="What vouchers paid, less reversals and rejected claim lines.")
    reversed = MoneyField(help_text="Redemptions reversed because their invoices were voided.")
    outstanding = MoneyField(help_text="Still on live vouchers.")
    expired = MoneyField(help_text="Expired unused (breakage).")
    revoked = MoneyField(help_text="Released by revocation.")
    rejected = MoneyField(
        help_text="Claim lines the issuer rejected: billed back to the companies and given back to the budget."
    )
    left = MoneyField(help_text="Budget not committed to any voucher.")
    vouchers = _VoucherCounts()
    redemptions = serializers.IntegerField()
    by_company = _CompanySpend(many=True)
    by_provider = _ProviderSpend(many=True)
    by_province = _ProvinceSpend(many=True)
    by_hub = _HubSpend(many=True)
    by_month = _MonthSpend(many=True)
