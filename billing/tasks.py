"""Thin Celery tasks: each takes ids or plain values and calls a service that is safe to run twice."""

from datetime import datetime
from uuid import UUID

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing.services import invoices, payments
from billing.services.bank import grants, holds, top_ups
from billing.services.usage import queue_rollups, usage_rollup_buckets, usage_rollups_overdue


@shared_task(name="billing.tasks.usage_rollup")
def usage_rollup(buckets: list[list[str]]) -> int:
    """Recompute the rollups of these [lease id, hour] buckets from the raw events (queue: ingest)."""
    return usage_rollup_buckets(buckets=[(UUID(lease_id), datetime.fromisoformat(hour)) for lease_id, hour in buckets])


@shared_task(name="billing.tasks.usage_rollups_requeue")
def usage_rollups_requeue() -> int:
    """Queue again the rollups whose task was lost, e.g. with a restarted Redis (beat, queue: ingest)."""
    buckets = usage_rollups_overdue(now=timezone.now())
    queue_rollups(buckets)
    return len(buckets)


@shared_task(name="billing.tasks.invoices_finalize_due")
def invoices_finalize_due() -> int:
    """Finalize the invoices of closed periods (beat, queue: settle): one task per batch of invoices."""
    invoice_ids = [str(pk) for pk in invoices.invoices_due_for_finalizing(now=timezone.now())]
    size = settings.BILLING_FINALIZE_BATCH_SIZE
    for start in range(0, len(invoice_ids), size):
        invoices_finalize.delay(invoice_ids[start : start + size])
    return len(invoice_ids)


@shared_task(name="billing.tasks.invoices_finalize")
def invoices_finalize(invoice_ids: list[str]) -> int:
    return invoices.invoices_finalize(invoice_ids=invoice_ids)


@shared_task(name="billing.tasks.payments_collect_due")
def payments_collect_due() -> int:
    """Collect finalized invoices whose (next) payment attempt is due (beat, queue: payments)."""
    invoice_ids = payments.payments_due(now=timezone.now())
    for invoice_id in invoice_ids:
        payment_collect.delay(str(invoice_id))
    return len(invoice_ids)


@shared_task(name="billing.tasks.payment_collect")
def payment_collect(invoice_id: str) -> str | None:
    attempt = payments.invoice_collect(invoice_id=invoice_id)
    return attempt.status if attempt else None


@shared_task(name="billing.tasks.payment_refund")
def payment_refund(invoice_id: str) -> int:
    """Make the invoice's card refunds due (recorded before this task was queued; queue: payments)."""
    return payments.invoice_refund(invoice_id=invoice_id)


@shared_task(name="billing.tasks.payments_refund_due")
def payments_refund_due() -> int:
    """Card refunds Stripe has not made yet (an error, a lost task), tried again until made
    (beat, queue: payments)."""
    invoice_ids = payments.refunds_due(now=timezone.now())
    for invoice_id in invoice_ids:
        payment_refund.delay(str(invoice_id))
    return len(invoice_ids)


@shared_task(name="billing.tasks.payment_webhook_process")
def payment_webhook_process(event_id: str) -> str:
    return payments.webhook_process(event_id=event_id).status


@shared_task(name="billing.tasks.bank_check")
def bank_check() -> dict[str, int]:
    """Expired grants to breakage; holds against their horizon (leases warned or ended); lost automatic
    top-ups settled (beat, queue: settle)."""
    now = timezone.now()
    outcomes = holds.holds_review(now=now)
    outcomes["expired_fen"] = grants.grants_expire(now=now)
    outcomes["stale_top_ups"] = top_ups.top_ups_settle_stale(now=now)
    return outcomes


@shared_task(name="billing.tasks.bank_auto_top_up")
def bank_auto_top_up(buyer_id: str) -> str | None:
    top_up = top_ups.bank_auto_top_up(buyer_id=buyer_id)
    return top_up.status if top_up else None
