"""The Celery app: settings under the CELERY_ namespace, tasks autodiscovered."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("compute_grid")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Queues are named for their work so each scales with workers of its own.
app.conf.task_queues = [Queue(name) for name in ("ingest", "settle", "payments", "default")]
app.autodiscover_tasks()


@worker_init.connect
def _serve_metrics(**kwargs: Any) -> None:
    """In the worker's main process, before its pool starts: serve the counters of the pool's
    processes on METRICS_WORKER_PORT (set PROMETHEUS_MULTIPROC_DIR for the worker too)."""
    from core.metrics import metrics_server_start

    metrics_server_start()
