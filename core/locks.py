"""Advisory locks (one worker at a time on work that calls the outside world) and retried transactions."""

import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def advisory_lock(name: str) -> Iterator[bool]:
    """Try to take a PostgreSQL session lock named ``name``; yields whether it was taken.

    Unlike a row lock it can be held across calls to a payment provider without
    holding a transaction open.
    """
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        (taken,) = cursor.fetchone()
    try:
        yield bool(taken)
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


# SQLSTATEs of a transaction PostgreSQL rolled back for a concurrent one: it may simply run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def retry_on_conflict(func: Callable[P, R], attempts: int = 10) -> Callable[P, R]:
    """Run ``func`` (a whole transaction) again when PostgreSQL aborts it for a concurrent one.

    Inside an enclosing transaction it runs once: a failure there aborts the outer
    transaction too, which only its own caller can run again.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return func(*args, **kwargs)
        for attempt in range(1, attempts + 1):
            try:
                return func(*args, **kwargs)
            except OperationalError as exc:
                sqlstate = getattr(exc.__cause__, "sqlstate", None)
                if sqlstate not in RETRYABLE_SQLSTATES or attempt == attempts:
                    raise
                logger.info("transaction retried", extra={"function": func.__name__, "sqlstate": sqlstate})
                time.sleep(random.uniform(0, min(0.01 * 2**attempt, 2)))  # noqa: S311  jitter, not security
        raise AssertionError("unreachable")

    return wrapper
