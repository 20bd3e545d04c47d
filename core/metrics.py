"""Prometheus metrics for operators: ``/metrics`` on the web, a port of its own on a Celery worker.

Counters are kept by the processes that count (gunicorn workers, Celery pool
processes). With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client keeps each
process's values in a file of that directory and a scrape sums the files: any
worker that answers gives the same totals, and a counter never goes backwards
when another worker answers. One directory per process family (the gunicorn
master and its workers, a Celery worker and its pool): each serves its own
totals and Prometheus sums them across its targets.

Figures read from the database or the broker (pools by status, the rollup lag,
queue lengths) are computed when scraped, by collectors given to the web's view,
never kept in a process: every process would hold its own, stale, copy.
"""

import hmac
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import current_app as celery_app
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class QueueLengthCollector:
    """Tasks waiting in each of the app's Celery queues: the broker's count (LLEN of the
    queue's lists on Redis, files on the filesystem broker), taken when scraped."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "grid_celery_queue_length", "Tasks waiting in each Celery queue, read from the broker.", labels=["queue"]
        )
        with celery_app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel: Any = connection.default_channel  # kombu's virtual channel (Redis, filesystem)
            for queue in celery_app.conf.task_queues:
                # Not passive: Redis drops an empty queue's list, and a passive declare of it fails.
                family.add_metric([queue.name], channel.queue_declare(queue=queue.name).message_count)
        yield family


class _Scrape:
    """What one scrape returns: the counters of every process of this family, then each
    scrape-time collector; one that fails is logged and reported as down, the rest still served."""

    def __init__(self, collectors: Sequence[tuple[str, Collector]]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            yield from multiprocess.MultiProcessCollector(None).collect()
        else:  # one process (runserver, tests): its own registry
            yield from REGISTRY.collect()
        if not self.collectors:
            return
        up = GaugeMetricFamily(
            "grid_metrics_collector_up",
            "1 if the collector answered this scrape, 0 if it failed.",
            labels=["collector"],
        )
        for name, collector in self.collectors:
            try:
                families = list(collector.collect())
            except Exception:  # a broker or database down must not hide the other metrics
                logger.exception("metrics collector failed", extra={"collector": name})
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


def _authorized(authorization: str) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = authorization.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_page(*, authorization: str, collectors: Sequence[tuple[str, Collector]] = ()) -> tuple[int, str, bytes]:
    """(status, content type, body) of a scrape with this Authorization header."""
    if not settings.METRICS_TOKEN:
        return 403, "text/plain", b"Metrics are off: set METRICS_TOKEN to serve them.\n"
    if not _authorized(authorization):
        return 401, "text/plain", b"Send Authorization: Bearer <METRICS_TOKEN>.\n"
    return 200, CONTENT_TYPE_LATEST, generate_latest(_Scrape(collectors))


class MetricsView(View):
    """``GET /metrics`` for Prometheus, with the operators' bearer token (METRICS_TOKEN)."""

    http_method_names = ["get"]
    collectors: Sequence[tuple[str, Collector]] = ()

    def get(self, request: HttpRequest) -> HttpResponse:
        status, content_type, body = metrics_page(
            authorization=request.headers.get("Authorization", ""), collectors=self.collectors
        )
        response = HttpResponse(body, status=status, content_type=content_type)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line each."""


def _worker_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found: scrape /metrics.\n"]
    status, content_type, body = metrics_page(authorization=environ.get("HTTP_AUTHORIZATION", ""))
    headers = [("Content-Type", content_type)]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
    start_response({200: "200 OK", 401: "401 Unauthorized", 403: "403 Forbidden"}[status], headers)
    return [body]


def metrics_server_start() -> None:
    """Serve this Celery worker's counters (its pool processes' included) at
    ``http://<host>:METRICS_WORKER_PORT/metrics``, same token; nothing if the port is 0."""
    port = settings.METRICS_WORKER_PORT
    if not port:
        return
    server = make_server("", port, _worker_app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("serving metrics", extra={"port": port})
