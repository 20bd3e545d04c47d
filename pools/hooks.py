"""Hooks that higher apps register to act inside the pools' own transactions.

A price version hook runs inside the transaction that makes a new price version, with
its pool locked, after the version is made: billing marks for a new rollup the hours
of usage the version may now price, so what commits with the version is never lost.
"""

from collections.abc import Callable
from typing import Any

PriceVersionHook = Callable[[Any], None]  # (the new PricePlan)

PRICE_VERSION_HOOKS: list[PriceVersionHook] = []
