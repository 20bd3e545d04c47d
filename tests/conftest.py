import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.test import APIClient

from organizations.models import ApiKey, Organization
from organizations.services import api_key_create
from pools.models import GpuModel, Hub
from pools.reference import load_reference_data
from tests.factories import BuyerFactory, IssuerFactory, OperatorFactory, ProviderFactory

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Tests run on PostgreSQL and Redis, never on the embedded fallbacks.
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError("Tests need PostgreSQL: set DATABASE_URL=postgres://...")
    if not settings.REDIS_URL:
        raise pytest.UsageError("Tests need Redis: set REDIS_URL=redis://...")


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


@pytest.fixture
def celery_worker_process(transactional_db: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` process on the test Redis broker and the test database.

    The worker sees only committed rows, so tests using it are transactional.
    """
    from config.celery import app

    app.control.purge()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),
    }
    hostname = f"test-{os.getpid()}@{socket.gethostname()}"
    log = REPO / "var" / "test-worker.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "-Q", "default,ingest,settle,payments", "--pool", "solo",
                "--hostname", hostname, "--without-gossip", "--without-mingle",
            ],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for_worker(app, process, log, hostname)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _database_url() -> str:
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
