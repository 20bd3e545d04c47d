"""Gunicorn's hooks for the web: `gunicorn -c config/gunicorn.py config.wsgi:application --workers N`.

Each worker is a process of its own: its counters are written to a file of
PROMETHEUS_MULTIPROC_DIR, and whichever worker answers /metrics sums the files
of them all (core.metrics). The variable must be in the environment before a
worker imports prometheus_client, so it is set here, in the master, before any
worker is forked; unset, the master makes a private directory for this run.
The directory belongs to this master: it is emptied when the master starts.

This file is run on its own by gunicorn (not imported from the `config`
package): it must not import the project, nor prometheus_client at the top.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_private_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _private_dir = tempfile.mkdtemp(prefix="grid-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _private_dir


def on_starting(server: Any) -> None:
    """Before the first worker: counts of an earlier run are not this run's."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker that exited keeps its counters in the sums; its live gauges go with it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _private_dir:
        shutil.rmtree(_private_dir, ignore_errors=True)
