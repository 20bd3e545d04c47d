"""Where a provider is paid: registered once at once, changed after a cooling-off period."""

import re
import unicodedata
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import RuleViolation
from organizations.models import Organization
from organizations.services import audit_record
from settlements.models import PayoutAccount

ACCOUNT_CHANGE = "payout_account.change"


def _normalized(name: str) -> str:
    """A company name as banks compare it: full-width forms folded (NFKC), case and spaces ignored."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name)).casefold()


def payout_account_current(*, provider: Organization, at: datetime) -> PayoutAccount | None:
    """The version in effect at ``at``."""
    return (
        PayoutAccount.objects.filter(provider=provider, effective_at__lte=at)
        .order_by("-effective_at", "-requested_at")
        .first()
    )


def payout_account_pending(*, provider: Organization, at: datetime) -> PayoutAccount | None:
    """A change waiting for its cooling-off period to end."""
    return PayoutAccount.objects.filter(provider=provider, effective_at__gt=at).order_by("-requested_at").first()


@transaction.atomic
def payout_account_set(
    *, provider: Organization, account_name: str, bank_name: str, branch: str, account_number: str, by: str
) -> PayoutAccount:
    """Register or change the provider's payout account. The first takes effect at once; a change
    after ``PAYOUT_ACCOUNT_COOLING_OFF_HOURS`` (a later change replaces a pending one). Audited."""
    if _normalized(account_name) != _normalized(provider.legal_name):
        raise RuleViolation(
            gettext(
                "The account name must be the provider's legal name, as registered: "
                "%(legal_name)s. Payouts go only to the provider's own account."
            )
            % {"legal_name": f"{provider.legal_name!r}"},
            code="account_name_mismatch",
            fields={"account_name": [{"code": "account_name_mismatch", "message": "Must be the legal name."}]},
        )
    # One change at a time per provider; NO KEY UPDATE leaves rows that refer to it free to be written.
    Organization.objects.select_for_update(no_key=True).get(pk=provider.pk)
    now = timezone.now()
    current = payout_account_current(provider=provider, at=now)
    pending = payout_account_pending(provider=provider, at=now)
    cooling = timedelta(hours=settings.PAYOUT_ACCOUNT_COOLING_OFF_HOURS) if current else timedelta(0)
    if pending is not None:
        # A replaced pending change never takes effect.
        PayoutAccount.objects.filter(provider=provider, effective_at__gt=now).delete()
    account = PayoutAccount.objects.create(
        provider=provider,
        account_name=account_name.strip(),
        bank_name=bank_name.strip(),
        branch=branch.strip(),
        account_number=account_number,
        requested_at=now,
        effective_at=now + cooling,
        requested_by=by,
    )
    audit_record(
        actor=by,
        action=ACCOUNT_CHANGE,
        target=account,
        organization=provider,
        summary={
            "bank_name": account.bank_name,
            "branch": account.branch,
            "account_number": account.masked_number,
            "previous": current.masked_number if current else None,
            "replaced_pending": pending.masked_number if pending else None,
            "effective_at": account.effective_at.isoformat(),
        },
    )
    return account
