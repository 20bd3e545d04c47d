"""The demo wires localstripe's webhooks to itself: a top-up confirmed as the README shows is credited."""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from billing.models import CreditGrant, StripeEvent
from organizations.services import api_key_create
from tests.billing.test_bank_top_ups import wait_for
from tests.conftest import _free_port

WEBHOOK_PATH = "/api/v1/webhooks/stripe/"


def service(url: str, key: str, body: dict[str, str] | None = None) -> Any:
    """The service's API, as curl calls it: GET, or POST of a JSON body."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


def localstripe(url: str, secret_key: str, form: dict[str, str] | None = None) -> Any:
    """Stripe's API on localstripe, as curl calls it: ``curl -u KEY: URL [-d field=value ...]``, always a POST."""
    auth = "Basic " + base64.b64encode(f"{secret_key}:".encode()).decode()
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form or {}).encode(), headers={"Authorization": auth}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def webhooks_to_live_server(stripe, live_server, settings):  # type: ignore[no-untyped-def]
    """The demo's registration, against this test's live server; afterwards localstripe sends nowhere
    (the live server lives for the session: later tests must not receive this test's endpoint's events)."""
    out = StringIO()
    call_command("stripe_webhook_register", url=f"{live_server.url}{WEBHOOK_PATH}", stdout=out)
    assert f"sends its events to {live_server.url}{WEBHOOK_PATH}" in out.getvalue()
    yield live_server.url
    call_command("stripe_webhook_register", url="http://127.0.0.1:9/nowhere", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
@pytest.mark.wall_clock  # localstripe signs its webhooks with its own clock: one from "the future" is refused
def test_a_top_up_confirmed_the_way_the_readme_shows_is_credited_when_localstripes_webhook_arrives(
    webhooks_to_live_server, stripe, buyer, settings
) -> None:
    api = f"{webhooks_to_live_server}/api/v1"
    _, key = api_key_create(organization=buyer, name="readme", role="admin")
    secret_key = settings.STRIPE_API_KEY

    # given a top-up made through the API, which answers a PaymentIntent to confirm
    made = service(f"{api}/bank/top-ups/", key, {"amount": "500.00"})
    intent = made["payment_intent"]
    assert made["client_secret"].startswith(intent)

    # when the buyer's card is put on the PaymentIntent and the PaymentIntent confirmed (Stripe.js's steps)
    method = localstripe(
        f"{stripe}/v1/payment_methods",
        secret_key,
        {
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2030",
            "card[cvc]": "123",
        },
    )
    localstripe(f"{stripe}/v1/payment_intents/{intent}", secret_key, {"payment_method": method["id"]})
    confirmed = localstripe(f"{stripe}/v1/payment_intents/{intent}/confirm", secret_key)
    assert confirmed["status"] == "succeeded"

    # then localstripe's signed webhook reaches the service, which grants the credit once
    wait_for(lambda: service(f"{api}/bank/", key)["balance"] == "500.00")
    assert service(f"{api}/bank/top-ups/{made['id']}/", key)["status"] == "succeeded"
    # (events of earlier tests' PaymentIntents that localstripe was still sending may arrive too, and are ignored)
    succeeded = StripeEvent.objects.get(type="payment_intent.succeeded", payload__data__object__id=intent)
    assert succeeded.status == "processed"
    assert CreditGrant.objects.get().amount == 50_000


@pytest.mark.parametrize("api_base", ["", "https://api.stripe.com", "http://10.1.2.3:8420", "file:///etc/passwd"])
def test_registration_is_refused_unless_stripe_is_a_localstripe_on_loopback(settings, api_base: str) -> None:
    settings.STRIPE_API_BASE = api_base

    with pytest.raises(CommandError, match="not a localstripe on loopback: real Stripe's webhook endpoints"):
        call_command("stripe_webhook_register", url="http://127.0.0.1:8000/api/v1/webhooks/stripe/")


def test_registration_with_no_localstripe_answering_is_a_one_line_error(settings) -> None:
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{_free_port()}"

    with pytest.raises(CommandError, match="does not answer"):
        call_command("stripe_webhook_register", url="http://127.0.0.1:8000/api/v1/webhooks/stripe/", wait=0.5)
