import os
import socket

from celery import shared_task
from django.db import connection


@shared_task(name="core.tasks.ping")
def ping() -> dict[str, str | int]:
    """Round trip through a worker: proves broker, worker and database are wired."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (database_ok,) = cursor.fetchone()
    return {
        "pong": "ok",
        "worker": socket.gethostname(),
        "pid": os.getpid(),
        "database": "ok" if database_ok == 1 else "error",
    }
