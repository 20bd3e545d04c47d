"""The Celery app: settings under the CELERY_ namespace, tasks autodiscovered."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("compute_grid")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Queues are named for their work so each scales with workers of its own.
app.conf.task_queues = [Queue(name) for name in ("ingest", "settle", "payments", "default")]
app.autodiscover_tasks()
