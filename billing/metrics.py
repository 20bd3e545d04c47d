"""What billing counts for operators, served by ``core.metrics``.

Counters are incremented where the work is done (the web for usage and
webhooks, Celery workers for month end and collection), once its transaction
commits: a rolled-back batch counts nothing. Each series a dashboard expects is
created at zero, so that a rate over it exists before the first event.
"""

from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from billing.models import StripeEvent
from billing.selectors import usage_rollups_due

USAGE_EVENTS = Counter(
    "grid_usage_events",
    "Usage events received: accepted, duplicate (sent before, kept once) or rejected (with its code).",
    ["outcome", "code"],
)
_ACCEPTED = USAGE_EVENTS.labels(outcome="accepted", code="")
_DUPLICATE = USAGE_EVENTS.labels(outcome="duplicate", code="")

INVOICES_FINALIZED = Counter("grid_invoices_finalized", "Invoices finalized (month end, or by an operator).")
INVOICES_SET_ASIDE = Counter(
    "grid_invoices_set_aside",
    "Invoices finalizing set aside as drafts (usage without a price, or finalizing them failed; the rest of their"
    " batch was finalized): each needs an operator (reconcile lists them).",
)

PAYMENTS = Counter(
    "grid_payments",
    "Payments of invoices booked: card (Stripe) attempts succeeded or failed, bank transfers recorded.",
    ["method", "outcome"],
)
CARD_PAYMENT_SUCCEEDED = PAYMENTS.labels(method="card", outcome="succeeded")
CARD_PAYMENT_FAILED = PAYMENTS.labels(method="card", outcome="failed")
BANK_TRANSFER_RECORDED = PAYMENTS.labels(method="bank_transfer", outcome="succeeded")

STRIPE_WEBHOOKS = Counter(
    "grid_stripe_webhooks",
    "Stripe webhooks received: processed, ignored, failed, duplicate (handled before), invalid_signature "
    "or unprocessable (signed, but not an event this service can read: kept for inspection).",
    ["outcome"],
)
WEBHOOK_DUPLICATE = STRIPE_WEBHOOKS.labels(outcome="duplicate")
WEBHOOK_INVALID_SIGNATURE = STRIPE_WEBHOOKS.labels(outcome="invalid_signature")
WEBHOOK_UNPROCESSABLE = STRIPE_WEBHOOKS.labels(outcome="unprocessable")
for _status in (StripeEvent.Status.PROCESSED, StripeEvent.Status.IGNORED, StripeEvent.Status.FAILED):
    STRIPE_WEBHOOKS.labels(outcome=_status)


def count_on_commit(counter: Counter, amount: float = 1) -> None:
    """Add ``amount`` to this counter (a labelled child) once the current transaction commits."""
    transaction.on_commit(partial(counter.inc, amount), robust=True)


class _Batch(Protocol):
    accepted: int
    duplicates: int
    errors: list[dict[str, Any]]


def usage_batch_counted(batch: _Batch) -> None:
    """A batch's outcome (``IngestResult``): one increment per outcome and rejection code, not per event."""
    if batch.accepted:
        _ACCEPTED.inc(batch.accepted)
    if batch.duplicates:
        _DUPLICATE.inc(batch.duplicates)
    rejected: dict[str, int] = {}
    for error in batch.errors:
        rejected[error["code"]] = rejected.get(error["code"], 0) + 1
    for code, count in rejected.items():
        USAGE_EVENTS.labels(outcome="rejected", code=code).inc(count)


def webhook_counted(status: str) -> None:
    count_on_commit(STRIPE_WEBHOOKS.labels(outcome=status))


class RollupLagCollector:
    """Buckets of usage waiting for their rollup, and how long the oldest has waited, read when
    scraped. A few seconds is the normal lag; past USAGE_ROLLUP_REQUEUE_SECONDS, tasks were lost."""

    def collect(self, now: datetime | None = None) -> Iterable[Metric]:
        now = now or timezone.now()
        due, oldest = usage_rollups_due()
        yield GaugeMetricFamily("grid_usage_rollups_due", "(lease, hour) buckets of usage not rolled up yet.", due)
        yield GaugeMetricFamily(
            "grid_usage_rollup_lag_seconds",
            "Seconds since the oldest bucket still due was marked (0 when none is due).",
            max((now - oldest).total_seconds(), 0) if oldest else 0,
        )
