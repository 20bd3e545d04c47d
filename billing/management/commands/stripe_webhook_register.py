"""Point a localstripe's webhooks at this service, as Stripe's dashboard does for real Stripe.

localstripe keeps its webhook endpoints in memory only, so the demo registers its own at
every start. Real Stripe's endpoints are configured in Stripe's dashboard (Developers >
Webhooks), whose signing secret goes into STRIPE_WEBHOOK_SECRET: this command refuses to
talk to anything but a localstripe on this machine.
"""

import ipaddress
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Register this service's Stripe webhook URL and STRIPE_WEBHOOK_SECRET with the localstripe at "
        "STRIPE_API_BASE (loopback only), so that localstripe sends payment_intent events here, signed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", required=True, help="Where localstripe posts events: http://127.0.0.1:PORT/api/v1/webhooks/stripe/"
        )
        parser.add_argument("--name", default="compute-grid", help="The endpoint's name in localstripe.")
        parser.add_argument(
            "--events",
            default="",
            help="Comma-separated event types to send (default: all; the service acts on payment_intent.*).",
        )
        parser.add_argument(
            "--wait", type=float, default=0, help="Seconds to wait for localstripe to answer (it may be starting)."
        )

    def handle(self, *args: Any, url: str, name: str, events: str, wait: float, **options: Any) -> None:
        base = _localstripe_base(settings.STRIPE_API_BASE)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise CommandError(f"--url {url!r} is not an http(s) URL.")
        fields: list[tuple[str, str]] = [("url", url), ("secret", settings.STRIPE_WEBHOOK_SECRET)]
        fields += [("events[]", event.strip()) for event in events.split(",") if event.strip()]
        request = urllib.request.Request(  # noqa: S310 - http(s) on loopback, checked above
            f"{base}/_config/webhooks/{urllib.parse.quote(name, safe='')}",
            data=urllib.parse.urlencode(fields).encode(),
            method="POST",
        )
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - checked above
                    break
            except urllib.error.HTTPError as exc:
                raise CommandError(
                    f"localstripe at {base} refused the webhook endpoint ({exc.code}): is it a localstripe?"
                ) from None
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise CommandError(f"localstripe at {base} does not answer: {exc}") from None
                time.sleep(0.2)
        self.stdout.write(f"localstripe at {base} sends its events to {url} (endpoint {name!r}), signed.")


def _localstripe_base(api_base: str) -> str:
    """STRIPE_API_BASE if it is a server on this machine (a localstripe), else a CommandError."""
    parts = urllib.parse.urlsplit(api_base)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise CommandError(
            f"STRIPE_API_BASE is {api_base or 'empty (Stripe itself)'}, not a localstripe on loopback: "
            "real Stripe's webhook endpoints are set in Stripe's dashboard (Developers > Webhooks), "
            "with its signing secret in STRIPE_WEBHOOK_SECRET."
        )
    return api_base.rstrip("/")
