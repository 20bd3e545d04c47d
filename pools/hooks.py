"""Hooks that higher apps register to act inside the pools' own transactions.

A price version hook runs inside the transaction that makes a new price version, with
its pool locked, after the version is made: the marketplace tells the buyers of the
pool's running leases of a rise (their feed), billing marks for a new rollup the hours
of usage the version may now price, so what commits with the version is never lost.

A price effect hook answers a provider's dry run of a new version (not saved): the
marketplace lists the leases it reaches and how their expected cost changes.
"""

from collections.abc import Callable
from typing import Any

PriceVersionHook = Callable[[Any], None]  # (the new PricePlan)

PRICE_VERSION_HOOKS: list[PriceVersionHook] = []

PriceEffectHook = Callable[[Any], list[dict[str, Any]]]  # (the unsaved PricePlan) -> leases it reaches

PRICE_EFFECT_HOOKS: list[PriceEffectHook] = []

# An endpoint status hook runs inside the transaction that changes a model endpoint's status,
# its pool and the endpoint locked, before its cards are reserved or given back: the marketplace
# refuses to retire an endpoint that open token orders use, and ends them when an operator
# suspends it. It may refuse the change by raising an ``ApplicationError``.
EndpointStatusHook = Callable[[Any, str, str], None]  # (the locked ModelEndpoint, its new status, by)

ENDPOINT_STATUS_HOOKS: list[EndpointStatusHook] = []
