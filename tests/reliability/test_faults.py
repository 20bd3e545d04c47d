"""Faults injected into the real parts while usage is billed and invoices are settled: real Celery
worker processes on Redis, PostgreSQL, localstripe. Each test injects one fault, lets the service
recover the way production does (Celery beat's re-finding tasks, played by the test), and ends with
``assert_books_right``: every invoice paid once, every usage event billed once, ``reconcile`` clean."""

import os
import signal
import time
from collections import Counter

import psycopg
import pytest
import redis
from django.conf import settings

from billing.models import Account, Invoice, InvoiceLine, JournalEntry, PaymentAttempt
from billing.services.ledger import account_for
from billing.stripe_client import stripe_client
from billing.tasks import invoices_finalize_due
from config.celery import app
from tests.conftest import database_url
from tests.reliability.books import Beat, a_closed_month, assert_books_right
from tests.reliability.conftest import QUICK, StripeProxy, producing_to
from tests.reliability.twice import PUBLISHED_AGAIN, publishing_twice

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

QUEUES = ("ingest", "settle", "payments", "default")


def wait_for(condition, timeout: float = 60, every: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition.__doc__ or condition}")
        time.sleep(every)


@pytest.mark.parametrize(
    ("moment", "reached", "unfinished"),
    [
        pytest.param(
            "finalizing",
            lambda: Invoice.objects.exclude(status="draft").count() >= 2,
            lambda: Invoice.objects.filter(status="draft").exists(),
            id="finalizing",
        ),
        pytest.param(
            "collecting",
            lambda: PaymentAttempt.objects.exists(),
            lambda: Invoice.objects.exclude(status="paid").exists(),
            id="collecting",
        ),
    ],
)
def test_a_worker_sigkilled_in_the_middle_of_settlement_leaves_every_invoice_paid_once(
    moment, reached, unfinished, stripe, celery_workers, make_client
) -> None:
    month = a_closed_month(8, make_client)
    first = celery_workers.start(env=QUICK)
    month.send(month.batch(day=2, hours=3))
    Beat().until_rolled_up()

    invoices_finalize_due.delay()
    wait_for(reached)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert unfinished(), f"the worker finished before it could be killed while {moment}"

    celery_workers.start(env=QUICK)
    Beat().until_settled(8)
    assert_books_right(month)


def test_redis_restarted_while_tasks_are_queued_loses_none_of_the_work(
    stripe, celery_workers, make_client, redis_server
) -> None:
    """Redis keeps nothing on disk: what was queued is gone. Tasks are queued only after commit,
    from rows that say the work is due (usage marked due for a rollup, drafts of closed months,
    invoices due for collection), so Celery beat's re-finding tasks redo all of it."""
    month = a_closed_month(6, make_client)
    with producing_to(redis_server.url):
        worker = celery_workers.start(env={**QUICK, "REDIS_URL": redis_server.url})
        month.send(month.batch(day=2))
        Beat().until_rolled_up()
        for queue in QUEUES:  # the worker stays connected but takes nothing: tasks pile up
            assert app.control.cancel_consumer(queue, reply=True)
        month.send(month.batch(day=3))
        invoices_finalize_due.delay()
        queued = redis_server.client()
        assert queued.llen("ingest") >= 1 and queued.llen("settle") == 1

        redis_server.kill()
        month.send(month.batch(day=4))  # accepted while the broker is down: stored, its rollup not queued
        redis_server.start()
        assert redis_server.client().dbsize() == 0, "the restarted Redis has lost every queued task"

        wait_for(lambda: app.control.ping(timeout=0.5), timeout=60)  # the worker has reconnected
        for queue in QUEUES:
            app.control.add_consumer(queue, reply=True)
        Beat().until_settled(6)

    assert worker.poll() is None
    assert_books_right(month)


WORKER_APP = "cg-fault-worker"
LOCK_POINTS = {
    # The last write of finalizing: lines, ledger entries and statements are written by then.
    "numbering an invoice": ("LOCK TABLE billing_invoicesequence IN SHARE MODE", []),
    # Booking a charge Stripe has made: its ledger leg needs a key-share lock on the clearing account.
    "booking a charge Stripe made": (
        "SELECT 1 FROM billing_account WHERE purpose = %s AND organization_id IS NULL FOR UPDATE",
        [Account.Purpose.STRIPE_CLEARING],
    ),
}


@pytest.mark.parametrize("point", list(LOCK_POINTS))
def test_a_workers_database_connection_dropped_mid_transaction_is_redone_and_the_books_are_right(
    point, stripe, celery_workers, make_client
) -> None:
    month = a_closed_month(4, make_client)
    worker = celery_workers.start(env={**QUICK, "PGAPPNAME": WORKER_APP})
    month.send(month.batch(day=2))
    Beat().until_rolled_up()
    account_for(purpose=Account.Purpose.STRIPE_CLEARING)  # made now, so that it can be locked

    # The test holds a lock the settlement transaction needs at ``point``; the worker waits for
    # it inside its transaction, and its backend is terminated there.
    with (
        psycopg.connect(database_url()) as blocker,
        psycopg.connect(database_url(), autocommit=True) as watcher,  # activity is a snapshot per transaction
    ):
        blocker.execute(*LOCK_POINTS[point])
        invoices_finalize_due.delay()
        waiting = (
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
            " AND xact_start IS NOT NULL"
        )
        wait_for(lambda: watcher.execute(waiting, [WORKER_APP]).fetchone())
        (pid,) = watcher.execute(waiting, [WORKER_APP]).fetchone()  # type: ignore[misc]
        assert watcher.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        wait_for(lambda: not watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone())

        # Nothing the dropped transaction wrote is left (the lock still holds every other run back).
        if point == "numbering an invoice":
            assert not Invoice.objects.exclude(status="draft").exists()
            assert not InvoiceLine.objects.exists() and not JournalEntry.objects.exists()
        else:
            (attempt,) = PaymentAttempt.objects.all()
            assert attempt.status == "pending"
            assert stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id).status == "succeeded"
            assert not JournalEntry.objects.filter(kind="payment.stripe").exists()
        blocker.rollback()

    Beat().until_settled(4)
    assert worker.poll() is None, "the worker carries on with a new connection"
    assert_books_right(month)


def test_stripe_timing_out_after_it_has_charged_charges_once(stripe, celery_workers, make_client) -> None:
    month = a_closed_month(3, make_client)
    with StripeProxy(stripe, lose=1, hold=5) as proxy:
        celery_workers.start(env={**QUICK, "STRIPE_API_BASE": proxy.url})
        month.send(month.batch(day=2))
        Beat().until_rolled_up()
        Beat().until_settled(3)
    assert len(proxy.lost) == 1, "the answer to a confirmation was lost after localstripe charged"
    assert_books_right(month)


def test_every_task_delivered_twice_to_two_workers_bills_and_charges_once(stripe, celery_workers, make_client) -> None:
    month = a_closed_month(6, make_client)
    twice = {**QUICK, "CELERY_PUBLISH_TWICE": "1"}
    celery_workers.start(env=twice, app="tests.reliability.twice")
    celery_workers.start(env=twice, app="tests.reliability.twice")
    published = redis.Redis.from_url(settings.REDIS_URL)
    published.delete(PUBLISHED_AGAIN)
    with publishing_twice():
        for day in (2, 3):
            batch = month.batch(day)
            month.send(batch)
            month.send(batch)  # the provider's agent retries the batch as well
        Beat(every=0.5).until_settled(6)
    again = Counter(name.decode() for name in published.lrange(PUBLISHED_AGAIN, 0, -1))
    # Sent twice by this process (the web process's rollups, the beat tasks) and by the workers.
    assert again["billing.tasks.usage_rollup"] >= 2 and again["billing.tasks.payments_collect_due"] >= 1
    assert again["billing.tasks.invoices_finalize"] >= 3 and again["billing.tasks.payment_collect"] >= 6
    assert_books_right(month)
