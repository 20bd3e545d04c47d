"""What beat starts on the settlement day: last month's claims, then its payout run."""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing.periods import month_of
from core.exceptions import ConflictError
from core.timezones import local_zone
from settlements.models import PayoutRun
from settlements.services.claims import claims_build
from settlements.services.payouts import payout_run_create


def settlements_due(*, now: datetime | None = None) -> int:
    """On or after SETTLEMENT_DAY of a month: build last month's claims (adds only what is missing)
    and, if last month has no payout run yet, start it. Returns how many things it made."""
    now = now or timezone.now()
    if now.astimezone(local_zone()).day < settings.SETTLEMENT_DAY:
        return 0
    last_month = month_of(now)[0] - timedelta(days=1)
    made = len(claims_build(at=last_month, now=now))
    if not PayoutRun.objects.filter(period_start=month_of(last_month)[0]).exists():
        try:
            payout_run_create(at=last_month, by="beat", now=now)
            made += 1
        except ConflictError:
            pass  # nothing to pay: carried forward
    return made
