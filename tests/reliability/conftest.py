"""Real parts that fail on demand: a Redis server of the test's own, a proxy that loses Stripe's answers."""

import http.client
import http.server
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.signals import request_started
from django.db import close_old_connections, transaction
from django.test import override_settings

from tests.conftest import REPO, _free_port
from tests.reliability.world import World, build_world

# Worker settings that make recovery quick enough for a test: invoices are finalized two at a time
# (so that a worker can die between batches); Redis hands a lost worker's
# unacknowledged task on after 6 s, an interrupted collection is due again after 2 s, a rollup
# whose task was lost is queued again after 2 s, a Stripe call is abandoned after 2 s.
QUICK = {
    "BILLING_FINALIZE_BATCH_SIZE": "2",
    "CELERY_VISIBILITY_TIMEOUT_SECONDS": "6",
    "CELERY_MAX_COUNTDOWN_SECONDS": "5",
    "BILLING_COLLECTION_RETRY_SECONDS": "2",
    "USAGE_ROLLUP_REQUEUE_SECONDS": "2",
    "STRIPE_TIMEOUT_SECONDS": "2",
}


class RedisServer:
    """A redis-server of the test's own on a free port, keeping nothing on disk (as the shared one):
    killing it loses every queued message. Never the shared server on 6379."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = REPO / "var" / f"test-redis-{self.port}.log"
        with log.open("ab") as log_file:
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.process and server.process.poll() is None:
            server.kill()


@contextmanager
def producing_to(broker_url: str) -> Iterator[None]:
    """This process (the web process of the test: the producer) sends its tasks to ``broker_url``."""
    from config.celery import app

    def forget_connections() -> None:
        # Not closed: kombu keeps one pool per broker URL for the process, and gives it out again.
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    forget_connections()
    app.conf.broker_url = broker_url
    try:
        yield
    finally:
        forget_connections()
        app.conf.broker_url = before


class StripeProxy:
    """An HTTP proxy in front of localstripe. Every request reaches localstripe; the answers to the
    first ``lose`` confirmations of a PaymentIntent are never sent back: the proxy holds the
    connection past the client's timeout, then closes it. The charge is made; the caller never
    learns it."""

    def __init__(self, upstream: str, *, lose: int, hold: float) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.lose = lose
        self.hold = hold
        self.lost: list[str] = []  # the paths whose answers were lost
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def do_DELETE(self) -> None:
                self.forward()

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                if self.command == "POST" and self.path.endswith("/confirm") and proxy.take_one_to_lose(self.path):
                    time.sleep(proxy.hold)  # the client has given up by now
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take_one_to_lose(self, path: str) -> bool:
        with self.lock:
            if len(self.lost) >= self.lose:
                return False
            self.lost.append(path)
            return True

    def __enter__(self) -> "StripeProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


FIGURES = Path(__file__).resolve().parents[2] / "var"
_loaded_at = time.time()  # during collection: figures written after it are this run's


@pytest.fixture(scope="module")
def localstripe_settings(localstripe_url: str) -> Iterator[None]:
    """Paying and topping up reach Stripe: here localstripe, a stateful fake Stripe on loopback."""
    with override_settings(STRIPE_API_BASE=localstripe_url):
        yield


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any, localstripe_settings: None) -> Iterator[World]:
    """One world for a whole module, rolled back at its end (each test also rolls back its own
    changes). Requests through the WSGI handler would close the test's connection at each
    request (request_started): not while the world lives."""
    request_started.disconnect(close_old_connections)
    try:
        with django_db_blocker.unblock():
            outer = transaction.atomic()
            outer.__enter__()
            try:
                yield build_world()
            finally:
                transaction.set_rollback(True)
                outer.__exit__(None, None, None)
    finally:
        request_started.connect(close_old_connections)


def write_figures(name: str, figures: dict[str, Any]) -> None:
    FIGURES.mkdir(exist_ok=True)
    (FIGURES / name).write_text(json.dumps(figures, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the reliability tests measured in this session (for docs/reliability.md)."""
    for name in ("fuzz-figures.json", "isolation-figures.json"):
        path = FIGURES / name
        if path.exists() and path.stat().st_mtime >= _loaded_at:
            figures = json.loads(path.read_text())
            module = "test_schema_fuzz" if name.startswith("fuzz") else "test_tenant_isolation"
            failed = [r.head_line for r in terminalreporter.stats.get("failed", []) if module in r.nodeid]
            figures |= {"failed_tests": len(failed), "failed": failed}
            terminalreporter.write_sep("-", f"reliability figures: {name}")
            terminalreporter.write_line(json.dumps(figures))
