"""Every task message published twice, with the same task id: a broker's at-least-once delivery at
its worst. Workers started with ``-A tests.reliability.twice`` and ``CELERY_PUBLISH_TWICE=1`` send
every task they queue twice; the test process does so inside ``publishing_twice()``."""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import signals
from django.conf import settings

from config.celery import app

__all__ = ["PUBLISHED_AGAIN", "app", "publishing_twice"]

_publishing = threading.local()
PUBLISHED_AGAIN = "tests:published-again"  # a Redis list: the name of each task sent a second time, by any process


def _publish_again(sender: str, body: Any, routing_key: str, headers: dict[str, Any], **_: Any) -> None:
    if getattr(_publishing, "again", False):
        return
    _publishing.again = True
    try:
        args, kwargs, _embed = body
        app.send_task(sender, args=args, kwargs=kwargs, task_id=headers["id"], queue=routing_key)
        redis.Redis.from_url(settings.REDIS_URL).rpush(PUBLISHED_AGAIN, sender)
    finally:
        _publishing.again = False


@contextmanager
def publishing_twice() -> Iterator[None]:
    signals.after_task_publish.connect(_publish_again, weak=False)
    try:
        yield
    finally:
        signals.after_task_publish.disconnect(_publish_again)


if os.environ.get("CELERY_PUBLISH_TWICE") == "1":
    signals.after_task_publish.connect(_publish_again, weak=False)
