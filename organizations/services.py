import hashlib
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext

from core.context import current_origin
from core.exceptions import ConflictError, NotFoundError, RuleViolation
from core.rows import Rows
from organizations.models import ApiKey, AuditEvent, InvoicingDetails, MemberProfile, Membership, Organization

KEY_PREFIX_BYTES = 6
KEY_SECRET_BYTES = 32
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash suffices: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def organization_create(
    *,
    kind: str,
    slug: str,
    legal_name: str,
    credit_code: str,
    province: str,
    city: str = "",
    is_sme: bool = False,
    parent: Organization | None = None,
) -> Organization:
    organization = Organization(
        kind=kind,
        slug=slug,
        legal_name=legal_name,
        credit_code=credit_code,
        province=province,
        city=city,
        is_sme=is_sme,
        parent=parent,
    )
    organization.full_clean()
    organization.save()
    return organization


def api_key_cap_check(*, organization: Organization) -> None:
    cap = settings.API_KEYS_PER_ORGANIZATION
    if ApiKey.objects.filter(organization=organization, revoked_at__isnull=True).count() >= cap:
        raise RuleViolation(
            gettext(
                "This organization already has %(cap)s live API keys, the most it may hold: "
                "revoke one it no longer uses (DELETE /api/v1/api-keys/{id}/) and create the new "
                "one then."
            )
            % {"cap": cap},
            code="api_key_limit_reached",
            details={"limit": cap},
        )


@transaction.atomic
def api_key_create(
    *, organization: Organization, name: str, role: str = ApiKey.Role.ADMIN, created_by: str = ""
) -> tuple[ApiKey, str]:
    """Make a key; the clear key is returned once and never stored. An organization holds at most
    settings.API_KEYS_PER_ORGANIZATION live keys: its row is locked while they are counted, so
    concurrent creations count one after another."""
    Organization.objects.select_for_update(no_key=True).filter(pk=organization.pk).first()  # NO KEY: FK checks pass
    api_key_cap_check(organization=organization)
    prefix = secrets.token_hex(KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(KEY_SECRET_BYTES)
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        role=role,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        created_by=created_by,
    )
    audit_record(
        actor=created_by or "unknown",
        action=AuditEvent.Action.API_KEY_CREATE,
        target=api_key,
        organization=organization,
        summary={"name": name, "role": role, "prefix": prefix},
    )
    return api_key, f"cg_{prefix}_{secret}"


@transaction.atomic
def api_key_revoke(*, organization: Organization, key_id: str, by: str) -> ApiKey:
    api_key = ApiKey.objects.select_for_update().filter(organization=organization, pk=key_id).first()
    if api_key is None:
        raise NotFoundError(gettext("No such API key in your organization."))
    if api_key.revoked_at is not None:
        raise ConflictError(gettext("This API key is already revoked."), code="already_revoked")
    api_key.revoked_at = timezone.now()
    api_key.save(update_fields=["revoked_at"])
    audit_record(
        actor=by,
        action=AuditEvent.Action.API_KEY_REVOKE,
        target=api_key,
        organization=organization,
        summary={"name": api_key.name, "prefix": api_key.prefix},
    )
    return api_key


# A key and its organization, both rows whole, by the key's prefix.
_KEY_ROWS, _ORGANIZATION_ROWS = Rows(ApiKey, alias="k"), Rows(Organization, alias="o")
_API_KEY_SQL = f"""
SELECT {_KEY_ROWS.columns}, {_ORGANIZATION_ROWS.columns}
FROM {ApiKey._meta.db_table} k JOIN {Organization._meta.db_table} o ON o.id = k.organization_id
WHERE k.prefix = %s
"""  # noqa: S608  # the tables' names and columns, not input


def _api_key_by_prefix(prefix: str) -> ApiKey | None:
    """The key with ``prefix`` (unique) and its organization, as ``select_related`` reads them, in
    plain SQL: the ORM compiling that query cost more than the query (every keyed request asks)."""
    with connection.cursor() as cursor:
        cursor.execute(_API_KEY_SQL, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_KEY_ROWS.attnames)
    api_key = _KEY_ROWS.instance(row[:split])
    ApiKey.organization.field.set_cached_value(api_key, _ORGANIZATION_ROWS.instance(row[split:]))
    return api_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key for ``cg_<prefix>_<secret>``, or None; records when it was last used."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "cg":
        return None
    _, prefix, secret = parts
    api_key = _api_key_by_prefix(prefix)
    if api_key is None or not api_key.is_active:
        return None
    if not secrets.compare_digest(api_key.secret_hash, hash_secret(secret)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


@transaction.atomic
def member_set(
    *, organization: Organization, username: str, password: str, role: str = Membership.Role.MEMBER
) -> Membership:
    """Make ``username`` a member of ``organization`` who signs in with ``password`` (set anew
    if the user exists): how people reach the dashboards."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first() or user_model(username=username)
    user.set_password(password)
    user.save()
    membership, _ = Membership.objects.update_or_create(user=user, organization=organization, defaults={"role": role})
    return membership


@transaction.atomic
def member_language_set(*, user_id: int, language: str) -> MemberProfile:
    """The language ``user_id`` reads the dashboards in: ``en``, ``zh-hans``, or "" for their
    organization's default (organizations.languages)."""
    profile, _ = MemberProfile.objects.get_or_create(user_id=user_id)
    profile.language = language
    profile.full_clean()
    profile.save(update_fields=["language"])
    return profile


Target = tuple[models.Model, Organization | None, Mapping[str, Any]]


def _audit_event(*, actor: str, action: str, target: Target, at: datetime) -> AuditEvent:
    obj, organization, summary = target
    origin = current_origin()
    return AuditEvent(
        occurred_at=at,
        action=action,
        target_type=obj._meta.model_name or "",
        target_id=str(obj.pk),
        organization_id=organization.pk if organization is not None else None,
        summary=dict(summary),
        actor=actor[:200],
        actor_organization_id=origin.organization_id,
        actor_api_key_prefix=origin.api_key_prefix,
        source=origin.source,
        ip=origin.ip,
        user_agent=origin.user_agent,
        request_id=origin.request_id,
    )


@transaction.atomic
def audit_record(
    *,
    actor: str,
    action: str,
    target: models.Model,
    organization: Organization | None = None,
    summary: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Record an operator's, issuer's or key manager's action in the append-only audit trail.

    Call it inside the action's transaction. ``actor`` is who did it as the service
    knows it (its ``by``); where it came from (IP, user agent, request id, or the
    command) and the calling organization and key are read from ``core.context``.
    ``summary`` is a small JSON object of what changed (amounts as yuan strings).
    """
    event = _audit_event(actor=actor, action=action, target=(target, organization, summary or {}), at=timezone.now())
    event.save(force_insert=True)
    return event


@transaction.atomic
def audit_record_many(*, actor: str, action: str, targets: Iterable[Target]) -> list[AuditEvent]:
    """One event per target, in one statement (e.g. each voucher of an issued batch)."""
    now = timezone.now()
    return AuditEvent.objects.bulk_create(
        [_audit_event(actor=actor, action=action, target=target, at=now) for target in targets]
    )


INVOICING_DETAILS_SET = "invoicing_details.set"


@transaction.atomic
def invoicing_details_set(
    *,
    organization: Organization,
    title: str,
    taxpayer_id: str,
    address: str = "",
    phone: str = "",
    bank_name: str = "",
    bank_account: str = "",
    by: str,
) -> InvoicingDetails:
    """Keep what the buyer's fapiao carry (a whole replacement, as PUT says). Audited with what
    changed; a fapiao already requested keeps the details it was requested with."""
    fields = {
        "title": title.strip(),
        "taxpayer_id": taxpayer_id.strip(),
        "address": address.strip(),
        "phone": phone.strip(),
        "bank_name": bank_name.strip(),
        "bank_account": bank_account.strip(),
    }
    before = InvoicingDetails.objects.select_for_update().filter(organization=organization).first()
    previous = {name: getattr(before, name) for name in fields} if before else {}
    details, _ = InvoicingDetails.objects.update_or_create(
        organization=organization, defaults={**fields, "updated_at": timezone.now()}
    )
    changed = sorted(name for name, value in fields.items() if previous.get(name) != value)
    if changed:
        audit_record(
            actor=by,
            action=INVOICING_DETAILS_SET,
            target=details,
            organization=organization,
            summary={"changed": changed, "title": details.title, "taxpayer_id": details.taxpayer_id},
        )
    return details
