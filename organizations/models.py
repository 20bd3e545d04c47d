import uuid

from django.conf import settings
from django.db import models

from organizations.validators import validate_credit_code


class Organization(models.Model):
    class Kind(models.TextChoices):
        BUYER = "buyer", "Buyer"
        PROVIDER = "provider", "Provider"
        ISSUER = "issuer", "Issuer"
        OPERATOR = "operator", "Operator"

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

    def is_related_to(self, other: "Organization") -> bool:
        """Same legal entity, or in the same group (one is the other's parent, or a sibling)."""
        if self.credit_code == other.credit_code or self.pk == other.pk:
            return True
        mine = {self.pk, self.parent_id} - {None}
        theirs = {other.pk, other.parent_id} - {None}
        return bool(mine & theirs)


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization.slug} ({self.role})"


class ApiKey(models.Model):
    """A secret that acts for one organization. Only its SHA-256 is stored.

    The key reads ``cg_<prefix>_<secret>``; the prefix is stored in clear to
    find the row and to let people tell their keys apart.
    """

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin: everything, including managing keys"
        MEMBER = "member", "Member: everything but managing keys"
        READ_ONLY = "read_only", "Read only"

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
