"""The one place the official ``stripe`` library is configured (localstripe in tests and the demo)."""

from functools import cache

import stripe
from django.conf import settings


@cache
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    addresses = {"api": api_base} if api_base else None
    return stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=2)  # type: ignore[arg-type]


def stripe_client() -> stripe.StripeClient:
    return _client(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE)
