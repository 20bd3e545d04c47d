"""/metrics as operators scrape it: the app under gunicorn with two workers (config/gunicorn.py),
and a Celery worker with a pool of two processes serving its own counters, on the test database."""

import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from django.utils import timezone

from billing.models import Invoice, PaymentAttempt, UsageRollupDue
from billing.services import invoices as invoice_services
from billing.tasks import invoices_finalize
from config.celery import app as celery_app
from core.tasks import ping
from organizations.models import ApiKey, Organization
from organizations.services import api_key_create
from pools.models import ResourcePool
from tests.billing.conftest import gpu_event, running_lease
from tests.billing.factories import leased, usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.billing.test_payments import intent_event, signed
from tests.conftest import REPO, Workers, database_url
from tests.factories import BuyerFactory, OperatorFactory, ProviderFactory, pool_factory
from tests.ops.metrics import Scrape, request, scrape, went_backwards

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-the-tests-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Web:
    url: str
    access_log: Path

    def scrape(self) -> Scrape:
        return scrape(f"{self.url}/metrics", TOKEN)

    def pids_that_answered(self, path: str) -> set[str]:
        """The workers that served ``path``, from gunicorn's access log (``<pid> METHOD path status``)."""
        return set(re.findall(rf"^<(\d+)> \w+ {re.escape(path)} ", self.access_log.read_text(), flags=re.MULTILINE))


@pytest.fixture(scope="module")
def web(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """gunicorn with two sync workers, started as the Dockerfile starts it, on the test database."""
    folder = tmp_path_factory.mktemp("gunicorn")
    (folder / "metrics").mkdir()
    port = _free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        "METRICS_TOKEN": TOKEN,
    }
    command = [
        sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application",
        "--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-control-socket",
        "--access-logfile", str(folder / "access.log"), "--access-logformat", "%(p)s %(m)s %(U)s %(s)s",
    ]  # fmt: skip
    log = folder / "gunicorn.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (_listening(port) and request(f"{url}/healthz")[0] == 200):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Web(url=url, access_log=folder / "access.log")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _key(organization: Organization) -> dict[str, str]:
    _, raw = api_key_create(organization=organization, name="metrics test", role=ApiKey.Role.ADMIN)
    return {"Authorization": f"Bearer {raw}"}


def test_both_workers_answer_and_no_counter_ever_goes_backwards_between_scrapes(web: Web) -> None:
    # Given: requests served by both workers between the scrapes
    def load() -> None:
        for _ in range(3):
            request(f"{web.url}/healthz")

    # When: Prometheus scrapes again and again, whichever worker answers
    scrapes = []
    for _ in range(30):
        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        scrapes.append(web.scrape())
        for thread in threads:
            thread.join()

    # Then: each worker answered scrapes, and every counter only grew from one scrape to the next
    assert len(web.pids_that_answered("/metrics")) == 2
    assert len(web.pids_that_answered("/healthz")) == 2
    for earlier, later in itertools.pairwise(scrapes):
        assert went_backwards(earlier, later) == []
    # 9 /healthz and a scrape a round: whichever worker answered last counted those of both
    assert scrapes[-1].moved(scrapes[0], "django_http_requests_total_by_method_total", method="GET") >= 28 * 10


def test_usage_events_are_counted_accepted_duplicate_and_rejected_by_code(web: Web) -> None:
    # Given: a provider's running lease
    provider = ProviderFactory()
    lease = running_lease(buyer=BuyerFactory(), provider=provider)
    post, headers = f"{web.url}/api/v1/usage-events/", _key(provider)
    before = web.scrape()

    # When: a batch with a good event, the same event again, then a batch of two bad ones
    event = gpu_event(lease, "evt-1")
    first = request(post, method="POST", body=[event], headers=headers)
    again = request(post, method="POST", body=[event], headers=headers)
    bad = [gpu_event(lease, "evt-2", subject=str(uuid4())), gpu_event(lease, "evt-3", time="yesterday")]
    rejected = request(post, method="POST", body=bad, headers=headers)

    # Then
    assert [first[0], again[0], rejected[0]] == [200, 200, 200]
    after = web.scrape()
    assert [
        after.moved(before, "grid_usage_events_total", outcome="accepted", code=""),
        after.moved(before, "grid_usage_events_total", outcome="duplicate", code=""),
        after.moved(before, "grid_usage_events_total", outcome="rejected", code="unknown_lease"),
        after.moved(before, "grid_usage_events_total", outcome="rejected", code="invalid_time"),
    ] == [1, 1, 1, 1]


def test_pools_rollup_lag_and_queue_lengths_are_read_from_the_database_and_the_broker(web: Web) -> None:
    # Given: pools active (two), stale and suspended; a bucket due for 10 minutes; tasks waiting in two queues
    lease = running_lease(buyer=BuyerFactory(), provider=ProviderFactory())
    pool_factory()
    pool_factory(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    pool_factory(status=ResourcePool.Status.SUSPENDED)
    UsageRollupDue.objects.create(
        lease=lease, hour=timezone.now().replace(minute=0, second=0, microsecond=0), batch=uuid4(),
        marked_at=timezone.now() - timedelta(minutes=10),
    )  # fmt: skip
    celery_app.control.purge()
    for queue in ("settle", "settle", "payments"):
        ping.apply_async(queue=queue)

    # When
    scraped = web.scrape()

    # Then
    celery_app.control.purge()
    pools = {status: scraped.value("grid_pools", status=status) for status in ("active", "stale", "suspended")}
    assert pools == {"active": 2, "stale": 1, "suspended": 1}
    assert scraped.value("grid_usage_rollups_due") == 1
    assert 600 <= scraped.value("grid_usage_rollup_lag_seconds") < 900
    queues = {
        queue: scraped.value("grid_celery_queue_length", queue=queue) for queue in ("settle", "payments", "ingest")
    }
    assert queues == {"settle": 2, "payments": 1, "ingest": 0}


def test_stripe_webhooks_are_counted_by_outcome(web: Web) -> None:
    # Given: an event about a PaymentIntent that is none of ours
    stranger = intent_event("evt_stranger", "succeeded", PaymentAttempt(payment_intent_id="pi_unknown"))
    payload, signature = signed(stranger)
    hook = f"{web.url}/api/v1/webhooks/stripe/"
    before = web.scrape()

    # When: it is delivered twice, and a forged one once
    answers = [request(hook, method="POST", raw=payload, headers={"Stripe-Signature": signature})[0] for _ in (1, 2)]
    forged = request(hook, method="POST", raw=payload, headers={"Stripe-Signature": "t=1,v1=forged"})

    # Then
    assert (answers, forged[0]) == ([200, 200], 400)
    after = web.scrape()
    outcomes = ("ignored", "duplicate", "invalid_signature", "processed")
    moved = {outcome: after.moved(before, "grid_stripe_webhooks_total", outcome=outcome) for outcome in outcomes}
    assert moved == {"ignored": 1, "duplicate": 1, "invalid_signature": 1, "processed": 0}


def test_a_card_payment_confirmed_by_webhook_and_a_bank_transfer_are_counted(web: Web) -> None:
    # Given: two finalized invoices, one with a card payment under way
    provider, marches = ProviderFactory(), []
    for buyer in (BuyerFactory(), BuyerFactory()):
        usage(leased(buyer=buyer, provider=provider, at=SETUP), shanghai(3, 12), seconds=8 * 3600)
        marches.append(march_invoice(buyer).pk)
    invoice_services.invoices_finalize(invoice_ids=marches, now=APRIL_5)
    by_card, by_transfer = Invoice.objects.get(pk=marches[0]), Invoice.objects.get(pk=marches[1])
    attempt = PaymentAttempt.objects.create(
        invoice=by_card, number=1, amount=by_card.amount_due, idempotency_key=f"k-{by_card.pk}",
        payment_intent_id=f"pi_{uuid4().hex}",
    )  # fmt: skip
    before = web.scrape()

    # When: Stripe says the card payment succeeded, and an operator records a transfer for the other
    payload, signature = signed(intent_event("evt_paid", "succeeded", attempt))
    hook = request(
        f"{web.url}/api/v1/webhooks/stripe/", method="POST", raw=payload, headers={"Stripe-Signature": signature}
    )
    transfer = request(
        f"{web.url}/api/v1/invoices/{by_transfer.pk}/bank-transfer/",
        method="POST", body={"amount": "1.00"}, headers=_key(OperatorFactory()),
    )  # fmt: skip

    # Then
    assert (hook[0], transfer[0]) == (200, 200), transfer
    after = web.scrape()
    assert [
        after.moved(before, "grid_payments_total", method="card", outcome="succeeded"),
        after.moved(before, "grid_payments_total", method="bank_transfer", outcome="succeeded"),
        after.moved(before, "grid_payments_total", method="card", outcome="failed"),
        after.moved(before, "grid_stripe_webhooks_total", outcome="processed"),
    ] == [1, 1, 0, 1]


@pytest.fixture
def worker_metrics(celery_workers: Workers, tmp_path: Path) -> str:
    """A Celery worker, a prefork pool of two, serving its counters on a port of its own."""
    port = _free_port()
    (tmp_path / "metrics").mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "METRICS_WORKER_PORT": str(port)}
    celery_workers.start(pool="prefork", concurrency=2, env={**env, "METRICS_TOKEN": TOKEN})
    return f"http://127.0.0.1:{port}/metrics"


def test_invoices_finalized_and_card_payments_failed_in_the_pool_are_served_by_the_worker(worker_metrics: str) -> None:
    # Given: a buyer with usage in March and no card on file
    buyer = BuyerFactory()
    usage(leased(buyer=buyer, provider=ProviderFactory(), at=SETUP), shanghai(3, 12), seconds=8 * 3600)
    invoice = march_invoice(buyer)
    before = scrape(worker_metrics, TOKEN)

    # When: month end runs on the worker: the invoice is finalized, then collecting it fails
    invoices_finalize.delay([str(invoice.pk)])
    deadline = time.monotonic() + 60
    while (after := scrape(worker_metrics, TOKEN)).value("grid_payments_total", method="card", outcome="failed") < 1:
        assert time.monotonic() < deadline, "the worker did not finalize and collect the invoice"
        time.sleep(0.2)

    # Then: the worker's main process serves what its pool's processes counted
    assert after.moved(before, "grid_invoices_finalized_total") == 1
    assert after.moved(before, "grid_payments_total", method="card", outcome="failed") == 1
    assert PaymentAttempt.objects.get(invoice=invoice).status == PaymentAttempt.Status.FAILED
    assert request(worker_metrics)[0] == 401
