"""Settlement on real Celery workers over Redis, with localstripe: duplicates and a killed worker."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Invoice, JournalEntry, PaymentAttempt
from billing.periods import month_of
from billing.services.payments import payment_method_set
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from billing.tasks import invoices_finalize_due, payments_collect_due
from tests.billing.factories import leased, usage
from tests.billing.test_payments import GOOD_CARD, card
from tests.factories import BuyerFactory, ProviderFactory

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def buyers_with_a_closed_month_of_usage(count: int) -> list[Invoice]:
    """``count`` buyers with usage two months ago (closed, past the grace) and a card on file."""
    usage_month_start, _ = month_of(month_of(month_of(timezone.now())[0] - timedelta(days=1))[0] - timedelta(days=1))
    provider = ProviderFactory()
    for _ in range(count):
        buyer = BuyerFactory()
        lease = leased(buyer=buyer, provider=provider, at=usage_month_start - timedelta(days=10))
        usage(lease, usage_month_start + timedelta(days=2, hours=3), seconds=8 * 3600)
        payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    return list(Invoice.objects.all())


def wait_until_all_paid(count: int, timeout: float = 90, beat_every: float = 3) -> None:
    """Wait, sending the settlement tasks every few seconds as Celery beat would."""
    deadline = time.monotonic() + timeout
    next_beat = time.monotonic()
    while time.monotonic() < deadline:
        if Invoice.objects.filter(status="paid").count() == count:
            return
        if time.monotonic() >= next_beat:
            invoices_finalize_due.delay()
            payments_collect_due.delay()
            next_beat = time.monotonic() + beat_every
        time.sleep(0.2)
    statuses = list(Invoice.objects.values_list("status", flat=True))
    raise AssertionError(f"not all invoices paid in time: {statuses}")


def assert_settled_once(count: int) -> None:
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    year = numbers[0].split("-")[1]
    assert numbers == [f"CG-{year}-{n:06d}" for n in range(1, count + 1)]
    assert PaymentAttempt.objects.filter(status="succeeded").count() == count
    assert JournalEntry.objects.filter(kind="invoice.finalized").count() == count
    assert JournalEntry.objects.filter(kind="payment.stripe").count() == count
    intents = stripe_client().v1.payment_intents.list(params={"limit": 100}).data
    charged = [pi for pi in intents if pi.status == "succeeded"]
    assert len(charged) == count
    assert reconcile() == []


def test_settlement_tasks_sent_twice_to_two_workers_settle_each_invoice_once(stripe, celery_workers) -> None:
    buyers_with_a_closed_month_of_usage(6)
    celery_workers.start()
    celery_workers.start()

    for _ in range(2):
        invoices_finalize_due.delay()
        payments_collect_due.delay()
    wait_until_all_paid(6, beat_every=0.5)
    payments_collect_due.delay()  # nothing left to collect
    time.sleep(1)

    assert_settled_once(6)


def test_a_worker_killed_in_the_middle_of_settling_leaves_every_invoice_settled_once_after_restart(
    stripe, celery_workers
) -> None:
    buyers_with_a_closed_month_of_usage(12)
    # Small batches, so that the worker dies between them; a short visibility timeout, so that
    # Redis hands the killed worker's unacknowledged tasks on soon, and a short wait before an
    # interrupted collection is picked up again.
    quick = {
        "BILLING_FINALIZE_BATCH_SIZE": "2",
        "CELERY_VISIBILITY_TIMEOUT_SECONDS": "6",
        "CELERY_MAX_COUNTDOWN_SECONDS": "5",
        "BILLING_COLLECTION_RETRY_SECONDS": "2",
    }
    first = celery_workers.start(env=quick)

    invoices_finalize_due.delay()
    deadline = time.monotonic() + 60
    while Invoice.objects.exclude(status="draft").count() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert Invoice.objects.filter(status="draft").exists(), "the worker finished before it could be killed"

    celery_workers.start(env=quick)
    wait_until_all_paid(12)

    assert_settled_once(12)
