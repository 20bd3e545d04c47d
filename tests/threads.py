"""Running database work on real threads at once, for the concurrency tests."""

import threading
from collections.abc import Callable

from django.db import connection

MAX_THREADS = 20  # PostgreSQL allows only so many connections, shared with the rest of the suite


def run_concurrently(jobs: list[Callable[[], None]], threads: int | None = None) -> None:
    """Run ``jobs`` on ``threads`` threads (one per job, at most MAX_THREADS by default), each with
    its own database connection, all starting together. An error a job raises is raised here."""
    threads = threads or min(len(jobs), MAX_THREADS)
    barrier = threading.Barrier(threads)
    chunks = [jobs[index::threads] for index in range(threads)]
    errors: list[BaseException] = []

    def run(chunk: list[Callable[[], None]]) -> None:
        barrier.wait()
        try:
            for job in chunk:
                job()
        except BaseException as error:  # noqa: BLE001  raised below, in the calling thread
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
