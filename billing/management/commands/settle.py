"""Run month end now, or in a demo as of a later moment.

The same services as Celery beat's ``invoices-finalize-due`` and ``payments-collect-due``
tasks, run here in this process instead of fanned out to the workers, so that one can
watch them: each is safe to run twice, and so is this command.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.models import PaymentAttempt
from billing.periods import month_of
from billing.services import invoices, payments
from core.timezones import local_zone

PROGRESS_EVERY = 100  # collections between two progress lines


class Command(BaseCommand):
    help = (
        "Run the month-end jobs now: finalize the draft invoices of months closed for longer than "
        "BILLING_FINALIZE_GRACE_HOURS, then collect what is due by card (first charges and dunning "
        "retries). The services Celery beat runs hourly and every 10 minutes; safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--as-of",
            metavar="DATETIME",
            help=(
                "Run them as of this later moment instead of now, e.g. 2027-01-04T00:00 (ISO 8601; a time "
                f"without an offset is read in {settings.BILLING_TIME_ZONE}; a date alone is its midnight). "
                "For demos and tests: refused unless settings.BILLING_AS_OF_ALLOWED (dev and test settings), "
                "never in production."
            ),
        )

    def handle(self, *args: Any, as_of: str | None = None, **options: Any) -> None:
        now = timezone.now() if as_of is None else _as_of(as_of)
        self.stdout.write(f"Settling as of {_local(now)} ({_utc(now)})")

        finalized = self._finalize(now)
        outcomes, failures = self._collect(now)

        collected = sum(outcomes.values())
        self.stdout.write(
            f"Settled: {finalized:,} invoice{'s' * (finalized != 1)} finalized; "
            f"{collected:,} payment{'s' * (collected != 1)} collected: "
            + ", ".join(f"{outcomes[outcome]:,} {outcome}" for outcome in OUTCOMES)
            + (f" ({', '.join(f'{code} {n:,}' for code, n in sorted(failures.items()))})" if failures else "")
        )

    def _finalize(self, now: datetime) -> int:
        due = invoices.invoices_due_for_finalizing(now=now)
        grace = settings.BILLING_FINALIZE_GRACE_HOURS
        closed_before = month_of(now - timedelta(hours=grace))[0]
        self.stdout.write(
            f"Finalizing {len(due):,} draft{'s' * (len(due) != 1)} of months that ended by "
            f"{_local(closed_before)} (month end plus {grace} hours of grace for late usage)"
        )
        size = settings.BILLING_FINALIZE_BATCH_SIZE
        finalized = 0
        for start in range(0, len(due), size):
            batch = due[start : start + size]
            finalized += invoices.invoices_finalize(invoice_ids=batch, now=now)
            self.stderr.write(f"  {start + len(batch):,}/{len(due):,} looked at, {finalized:,} finalized")
        return finalized

    def _collect(self, now: datetime) -> tuple[Counter[str], Counter[str]]:
        due = payments.payments_due(now=now)
        self.stdout.write(f"Collecting {len(due):,} invoice{'s' * (len(due) != 1)} due by card")
        outcomes: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})
        failures: Counter[str] = Counter()
        for done, invoice_id in enumerate(due, start=1):
            attempt = payments.invoice_collect(invoice_id=invoice_id, now=now)
            # None: nothing was owed any more, or another run (a worker) is collecting it right now.
            outcomes[attempt.status if attempt else "skipped"] += 1
            if attempt and attempt.status == PaymentAttempt.Status.FAILED:
                failures[attempt.failure_code] += 1
            if done == len(due) or done % PROGRESS_EVERY == 0:
                self.stderr.write(f"  {done:,}/{len(due):,} collected")
        return outcomes, failures


OUTCOMES = ("succeeded", "failed", "pending", "skipped")


def _as_of(value: str) -> datetime:
    """The moment ``--as-of`` names, if this deployment allows time travel and it is not in the past."""
    if not settings.BILLING_AS_OF_ALLOWED:
        raise CommandError(
            "--as-of is refused with these settings (BILLING_AS_OF_ALLOWED is off, as in production): "
            "production settles as of now; run `manage.py settle` without --as-of."
        )
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--as-of {value!r} is not an ISO 8601 date and time, e.g. 2027-01-04T00:00 or 2027-01-04T00:00+08:00."
        ) from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=local_zone())
    if moment < timezone.now():
        raise CommandError(
            f"--as-of {value} ({_utc(moment)}) is in the past: month end runs as of now or a later moment."
        )
    return moment


def _local(moment: datetime) -> str:
    return f"{moment.astimezone(local_zone()):%Y-%m-%d %H:%M:%S} {settings.BILLING_TIME_ZONE}"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
