"""The one place the official ``stripe`` library is configured (localstripe in tests and the demo)."""

from functools import cache

import stripe
from django.conf import settings


@cache
def _client(api_key: str, api_base: str, timeout: int) -> stripe.StripeClient:
    addresses = {"api": api_base} if api_base else None
    return stripe.StripeClient(
        api_key,
        base_addresses=addresses,  # type: ignore[arg-type]
        max_network_retries=2,
        http_client=stripe.new_default_http_client(timeout=timeout),
    )


def stripe_client() -> stripe.StripeClient:
    return _client(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE, settings.STRIPE_TIMEOUT_SECONDS)
