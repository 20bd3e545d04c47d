"""Hooks that higher apps register to act inside the marketplace's own transactions.

A hook runs inside the transaction that starts or ends a lease, with the lease
row locked, so what it does commits or rolls back with the lease. A start hook may refuse the start
by raising an ``ApplicationError`` (billing refuses a prepaid buyer whose credit
does not cover the work); an end hook must not raise (billing releases a hold).
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

LeaseHook = Callable[[Any, datetime], None]  # (the locked lease, the time)

LEASE_START_HOOKS: list[LeaseHook] = []
LEASE_END_HOOKS: list[LeaseHook] = []
