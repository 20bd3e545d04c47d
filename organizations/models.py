import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from organizations.validators import validate_credit_code


class Organization(models.Model):
    class Kind(models.TextChoices):
        BUYER = "buyer", _("Buyer")
        PROVIDER = "provider", _("Provider")
        ISSUER = "issuer", _("Issuer")
        OPERATOR = "operator", _("Operator")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    slug = models.SlugField(max_length=64, unique=True)
    legal_name = models.CharField(max_length=200)
    credit_code = models.CharField("unified social credit code", max_length=18, validators=[validate_credit_code])
    province = models.CharField(max_length=32)
    city = models.CharField(max_length=64, blank=True)
    is_sme = models.BooleanField("small or medium enterprise", default=False)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="subsidiaries",
        help_text="The group this company belongs to, for related-party checks.",
    )
    is_active = models.BooleanField(default=True)
    orders_blocked_reason = models.CharField(
        max_length=200, blank=True, help_text="Set while new orders are refused, e.g. an uncollectible invoice."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            # One legal entity may act as buyer and provider, but once per kind.
            models.UniqueConstraint(fields=["kind", "credit_code"], name="organization_kind_credit_code_unique"),
            models.CheckConstraint(
                condition=models.Q(kind__in=["buyer", "provider", "issuer", "operator"]),
                name="organization_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.legal_name} ({self.kind})"


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", _("Admin")
        MEMBER = "member", _("Member")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization.slug} ({self.role})"


class MemberProfile(models.Model):
    """What a person who signs in to the dashboards chose for themselves: so far, the language."""

    class Language(models.TextChoices):
        ORGANIZATION_DEFAULT = "", "Organization's default"
        ENGLISH = "en", "English"
        SIMPLIFIED_CHINESE = "zh-hans", "简体中文"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="member_profile")
    language = models.CharField(
        max_length=8,
        choices=Language.choices,
        blank=True,
        help_text="The dashboards' language; blank: the organization's default (organizations.languages).",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(language__in=["", "en", "zh-hans"]), name="member_language_valid")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.language or 'organization default'})"


class ApiKey(models.Model):
    """A secret that acts for one organization. Only its SHA-256 is stored.

    The key reads ``cg_<prefix>_<secret>``; the prefix is stored in clear to
    find the row and to let people tell their keys apart.
    """

    class Role(models.TextChoices):
        ADMIN = "admin", _("Admin: everything, including managing keys")
        MEMBER = "member", _("Member: everything but managing keys")
        READ_ONLY = "read_only", _("Read only")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_by = models.CharField(max_length=200, blank=True, help_text="Who made it: a user, a command or a key.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (cg_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.organization.is_active


class AuditEvent(models.Model):
    """One operator, issuer or key-management action: who, when, what and from where.

    Append-only: a PostgreSQL trigger refuses UPDATE and DELETE (migration 0003), the
    admin shows it read-only, and the API only lists it. Write it with
    ``organizations.services.audit_record`` inside the transaction of the action, so
    an action that rolls back leaves no event and a committed one always has its event.
    """

    class Action(models.TextChoices):
        # Not a field's choices: an app may add actions without a migration. Listed for the schema and filters.
        API_KEY_CREATE = "api_key.create", "API key created"
        API_KEY_REVOKE = "api_key.revoke", "API key revoked"
        POOL_APPROVE = "pool.approve", "Pool approved"
        POOL_SUSPEND = "pool.suspend", "Pool suspended"
        POOL_RETIRE = "pool.retire", "Pool retired"
        VOUCHER_PROGRAM_CREATE = "voucher_program.create", "Voucher program created"
        VOUCHER_PROGRAM_OPEN = "voucher_program.open", "Voucher program opened"
        VOUCHER_PROGRAM_CLOSE = "voucher_program.close", "Voucher program closed"
        VOUCHER_ISSUE = "voucher.issue", "Voucher issued"
        VOUCHER_REVOKE = "voucher.revoke", "Voucher revoked"
        INVOICE_VOID = "invoice.void", "Invoice voided"
        INVOICE_BANK_TRANSFER = "invoice.bank_transfer", "Bank transfer recorded"
        BANK_CREDIT_GRANT = "bank.credit_grant", "Compute bank credit granted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    occurred_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    # Ids, not foreign keys: the trail outlives what it tells about (a deleted key or organization).
    organization_id = models.UUIDField(null=True, blank=True, help_text="The organization the target belongs to.")
    summary = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200, help_text="Who: 'org-slug/key-prefix', 'admin:user', 'command:name'.")
    actor_organization_id = models.UUIDField(null=True, blank=True, help_text="The organization of the calling key.")
    actor_api_key_prefix = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=100, help_text="'http', 'command:<name>' or 'system'.")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="auditevent_target"),
            models.Index(fields=["organization_id", "occurred_at"], name="auditevent_organization"),
            models.Index(fields=["actor_organization_id", "occurred_at"], name="auditevent_actor_organization"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id} by {self.actor}"


class InvoicingDetails(models.Model):
    """What a company's fapiao (发票) must carry: its title (legal name) and taxpayer id, and for a
    special VAT fapiao (增值税专用发票) its registered address, phone, bank and account. A fapiao
    request copies them as they are then; a later change leaves requested fapiao as they were."""

    organization = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.CASCADE, related_name="invoicing_details"
    )
    title = models.CharField(max_length=200, help_text="The buyer's legal name, as the fapiao's title.")
    taxpayer_id = models.CharField(
        "taxpayer id", max_length=18, validators=[validate_credit_code], help_text="Unified social credit code."
    )
    address = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    bank_name = models.CharField(max_length=200, blank=True)
    bank_account = models.CharField(max_length=40, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "invoicing details"

    def __str__(self) -> str:
        return f"{self.title} ({self.taxpayer_id})"

    @property
    def special_ready(self) -> bool:
        """Whether a special VAT fapiao can carry these: address, phone, bank and account all given."""
        return all((self.address, self.phone, self.bank_name, self.bank_account))
