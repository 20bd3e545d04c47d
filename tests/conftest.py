import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import connection
from rest_framework.test import APIClient

from organizations.models import ApiKey, Organization
from organizations.services import api_key_create
from pools.models import GpuModel, Hub
from pools.reference import load_reference_data
from tests.factories import BuyerFactory, IssuerFactory, OperatorFactory, ProviderFactory

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Tests run on the PostgreSQL and Redis servers CI starts, not on the embedded defaults.
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError("Tests need PostgreSQL: set DATABASE_URL=postgres://...")
    if not settings.REDIS_URL:
        raise pytest.UsageError("Tests need Redis: set REDIS_URL=redis://...")


# Tests that rate money run at this moment, not at the wall clock's: prices, tariff bands and
# billing months turn with the local hour and day. TEST_NOW (ISO 8601 with an offset) moves it,
# to show that they pass at any hour: e.g. TEST_NOW=2026-03-31T23:59:00+08:00 scripts/test.sh tests/billing
TEST_NOW = datetime.fromisoformat(os.environ.get("TEST_NOW") or "2026-03-18T14:30:00+08:00")


def pytest_report_header() -> str:
    return f"money tests run at {TEST_NOW.isoformat()} (TEST_NOW)"


@pytest.fixture
def frozen_clock(request: pytest.FixtureRequest) -> Iterator[datetime | None]:
    """The clock starts at ``TEST_NOW`` for each test (used by the money tests' conftests) and runs on
    from there, so that what a test does later is later (a page read after a posting sees it). A test
    marked ``wall_clock`` or ``celery_worker`` keeps the real clock: another process's clock
    (localstripe sending its webhooks, a browser keeping cookies, a worker) must agree with it."""
    if request.node.get_closest_marker("wall_clock") or request.node.get_closest_marker("celery_worker"):
        yield None
        return
    with time_machine.travel(TEST_NOW, tick=True):
        yield TEST_NOW


@pytest.fixture(scope="session", autouse=True)
def _flush_may_truncate_the_records() -> Iterator[None]:
    """Transactional tests empty the database with Django's flush, one TRUNCATE of every table.
    PostgreSQL refuses TRUNCATE of the ledger and the audit trail (core/0002_refuse_truncate)
    unless ``compute_grid.allow_truncate`` names the current transaction: the flush alone sets it,
    for its own transaction."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: DatabaseOperations, sql_list: list[str]) -> None:
        allow = "SELECT set_config('compute_grid.allow_truncate', pg_current_xact_id()::text, true)"
        flush(self, [allow, *sql_list])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "execute_sql_flush", execute_sql_flush)
        yield


@pytest.fixture(autouse=True)
def _forget_cached_accounts() -> Iterator[None]:
    """Tests flush or roll back the database under the process's cache of ledger accounts."""
    from billing.services import ledger

    yield
    ledger._accounts.clear()


@pytest.fixture(autouse=True)
def _forget_the_offers_snapshot() -> Iterator[None]:
    """Tests flush or roll back the pools under the process's offers snapshot."""
    from marketplace.offers import reset_offer_snapshot

    yield
    reset_offer_snapshot()


@pytest.fixture(autouse=True)
def _reference_data_in_transactional_tests(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the database after each test, data migrations
    included; load the hubs and GPU models again before each of them."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
        load_reference_data(Hub, GpuModel)
        with connection.cursor() as cursor:  # flush() skips this table: Django does not manage it
            cursor.execute("TRUNCATE billing_usageevent")


@pytest.fixture
def make_client() -> Callable[..., APIClient]:
    """An API client authenticated with a new key of ``organization``."""

    def make(organization: Organization, role: str = ApiKey.Role.ADMIN) -> APIClient:
        _, raw_key = api_key_create(organization=organization, name="test", role=role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        client.organization = organization  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture
def buyer(db: None) -> Organization:
    return BuyerFactory()


@pytest.fixture
def other_buyer(db: None) -> Organization:
    return BuyerFactory()


@pytest.fixture
def provider(db: None) -> Organization:
    return ProviderFactory()


@pytest.fixture
def issuer(db: None) -> Organization:
    return IssuerFactory()


@pytest.fixture
def operator(db: None) -> Organization:
    return OperatorFactory()


@pytest.fixture
def buyer_client(buyer: Organization, make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(buyer)


@pytest.fixture
def other_buyer_client(other_buyer: Organization, make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(other_buyer)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """A real localstripe server (a stateful fake Stripe) on loopback, for the whole session."""
    import urllib.request

    port = _free_port()
    log = REPO / "var" / "localstripe.log"
    log.parent.mkdir(exist_ok=True)
    executable = Path(sys.executable).with_name("localstripe")
    # --from-scratch: localstripe otherwise loads /tmp/localstripe.pickle, which any other localstripe
    # on the machine (the demo's, another checkout's tests) may be writing at that moment.
    command = [str(executable), "--port", str(port), "--from-scratch"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/customers", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers (401 without a key)
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"localstripe did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def stripe(localstripe_url: str, settings: Any) -> Iterator[str]:
    """Point the service at localstripe, emptied for this test."""
    import urllib.request

    request = urllib.request.Request(f"{localstripe_url}/_config/data", method="DELETE")
    urllib.request.urlopen(request, timeout=5)
    settings.STRIPE_API_BASE = localstripe_url
    os.environ["STRIPE_API_BASE"] = localstripe_url  # for worker processes started by this test
    try:
        yield localstripe_url
    finally:
        os.environ.pop("STRIPE_API_BASE", None)


class Workers:
    """Start real ``celery worker`` processes on the test Redis broker and the test database;
    all are stopped when the test ends. Workers see only committed rows, so tests using
    them are transactional."""

    def __init__(self) -> None:
        from config.celery import app

        self.app = app
        self.processes: list[subprocess.Popen[bytes]] = []
        app.control.purge()

    def start(
        self, *, pool: str = "solo", concurrency: int = 1, env: dict[str, str] | None = None, app: str = "config"
    ) -> subprocess.Popen[bytes]:
        """A worker of ``app`` (a module holding the Celery app: the project's, or a test's that wraps it)."""
        hostname = f"test-{os.getpid()}-{len(self.processes)}@{socket.gethostname()}"
        log = REPO / "var" / f"test-worker-{len(self.processes)}.log"
        log.parent.mkdir(exist_ok=True)
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            **(env or {}),
        }
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", app, "worker",
                    "-Q", "default,ingest,settle,payments", "--pool", pool, "--concurrency", str(concurrency),
                    "--hostname", hostname, "--without-gossip", "--without-mingle",
                ],
                cwd=REPO, env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        _wait_for_worker(self.app, process, log, hostname)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@pytest.fixture
def celery_workers(transactional_db: None) -> Iterator[Workers]:
    workers = Workers()
    try:
        yield workers
    finally:
        workers.stop_all()


@pytest.fixture
def celery_worker_process(celery_workers: Workers) -> subprocess.Popen[bytes]:
    """One real worker process (solo pool)."""
    return celery_workers.start()


def database_url() -> str:
    """The test database, for processes the tests start."""
    s = connection.settings_dict
    return f"postgres://{s['USER'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _wait_for_worker(app, process: subprocess.Popen[bytes], log: Path, hostname: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if app.control.ping(destination=[hostname], timeout=0.5):
            return
    raise RuntimeError(f"celery worker did not answer within {timeout}s:\n{log.read_text()[-3000:]}")
