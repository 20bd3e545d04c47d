import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import stripe as stripe_library
import time_machine
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing.models import Invoice, JournalEntry, PaymentAttempt, StripeEvent, UnprocessableWebhook
from billing.services.invoices import invoice_finalize, invoice_void
from billing.services.ledger import Purpose, balance_of
from billing.services.payments import invoice_collect, invoice_refund, payment_method_set
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from marketplace.dispatch import Requirements
from marketplace.services import order_place
from pools.models import ResourcePool
from pools.services import pool_heartbeat
from tests.billing.factories import leased, usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.factories import BuyerFactory, ProviderFactory

pytestmark = pytest.mark.django_db

GOOD_CARD = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"  # attaches, then every charge is declined


def card(number: str) -> str:
    method = stripe_client().v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    return method.id


def finalized_invoice(buyer, provider, number: str | None = GOOD_CARD) -> Invoice:  # type: ignore[no-untyped-def]
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    if number:
        payment_method_set(organization=buyer, payment_method=card(number))
    return invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)


def test_a_finalized_invoice_is_charged_to_the_card_on_file(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider)

    attempt = invoice_collect(invoice_id=invoice.pk)

    invoice.refresh_from_db()
    assert attempt is not None and attempt.status == "succeeded"
    assert (invoice.status, invoice.amount_paid) == ("paid", invoice.amount_due)
    intent = stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", invoice.amount_due, "cny")
    assert balance_of(purpose=Purpose.STRIPE_CLEARING) == invoice.amount_due
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert reconcile() == []


def test_collecting_again_charges_nothing_more(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider)

    invoice_collect(invoice_id=invoice.pk)
    invoice_collect(invoice_id=invoice.pk)

    assert PaymentAttempt.objects.filter(invoice=invoice).count() == 1
    assert JournalEntry.objects.filter(reference=invoice.reference, kind="payment.stripe").count() == 1


def test_a_charge_interrupted_after_stripe_was_called_is_finished_not_repeated(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider)
    original = stripe_client().v1.payment_intents.confirm

    def charged_then_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)  # Stripe charges the card...
        raise stripe_library.APIConnectionError("connection lost")  # ...and the answer never arrives

    client = stripe_client()
    client.v1.payment_intents.confirm = charged_then_lost  # type: ignore[method-assign]
    try:
        with pytest.raises(stripe_library.APIConnectionError):
            invoice_collect(invoice_id=invoice.pk)
    finally:
        del client.v1.payment_intents.confirm

    attempt = invoice_collect(invoice_id=invoice.pk)

    assert attempt is not None and attempt.status == "succeeded"
    assert PaymentAttempt.objects.filter(invoice=invoice).count() == 1
    assert Invoice.objects.get(pk=invoice.pk).amount_paid == invoice.amount_due
    assert reconcile() == []


def test_a_declined_card_goes_through_dunning_to_uncollectible_and_blocks_new_orders(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider, DECLINED_ON_CHARGE)
    tried = []

    for days in (0, 1, 3, 7):
        with time_machine.travel(APRIL_5 + timedelta(days=days, minutes=1), tick=False):
            attempt = invoice_collect(invoice_id=invoice.pk)
            tried.append((attempt.number, attempt.status, attempt.failure_code) if attempt else None)
            invoice.refresh_from_db()

    assert tried == [
        (1, "failed", "card_declined"),
        (2, "failed", "card_declined"),
        (3, "failed", "card_declined"),
        (4, "failed", "card_declined"),
    ]
    assert invoice.status == "uncollectible"
    buyer.refresh_from_db()
    assert "unpaid" in buyer.orders_blocked_reason
    from core.exceptions import RuleViolation

    with pytest.raises(RuleViolation, match="unpaid"):
        order_place(
            buyer=buyer, requirements=Requirements(cards=1, duration_hours=1, workload="training", gpu_model="H100-80G")
        )
    assert reconcile() == []


def test_the_dunning_schedule_waits_between_attempts(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider, DECLINED_ON_CHARGE)
    with time_machine.travel(APRIL_5, tick=False):
        invoice_collect(invoice_id=invoice.pk)

    invoice.refresh_from_db()
    assert invoice.status == "finalized"
    assert invoice.next_payment_attempt_at - APRIL_5 == timedelta(days=1)


def test_paying_an_uncollectible_invoice_with_a_good_card_lifts_the_block(
    stripe, buyer, provider, buyer_client
) -> None:
    invoice = finalized_invoice(buyer, provider, DECLINED_ON_CHARGE)
    Invoice.objects.filter(pk=invoice.pk).update(status="uncollectible")
    type(buyer).objects.filter(pk=buyer.pk).update(orders_blocked_reason="Invoice unpaid")

    response = buyer_client.post(
        f"/api/v1/invoices/{invoice.pk}/pay/", {"payment_method": card(GOOD_CARD)}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "paid"
    buyer.refresh_from_db()
    assert buyer.orders_blocked_reason == ""


def test_voiding_the_uncollectible_invoice_lifts_the_block_on_new_orders(stripe, buyer, provider) -> None:
    # given a buyer blocked by the invoice its declined card left uncollectible
    invoice = finalized_invoice(buyer, provider, DECLINED_ON_CHARGE)
    for days in (0, 1, 3, 7):
        with time_machine.travel(APRIL_5 + timedelta(days=days, minutes=1), tick=False):
            invoice_collect(invoice_id=invoice.pk)
    buyer.refresh_from_db()
    assert Invoice.objects.get(pk=invoice.pk).status == "uncollectible" and "unpaid" in buyer.orders_blocked_reason

    # when the operator voids it
    invoice_void(invoice_id=invoice.pk, by="operator")

    # then nothing it owes blocks the buyer any more: it may order again
    buyer.refresh_from_db()
    assert buyer.orders_blocked_reason == ""
    pool = ResourcePool.objects.get(provider=provider)
    pool_heartbeat(pool=pool, healthy_cards=pool.cards, observed_at=timezone.now())
    order_place(
        buyer=buyer, requirements=Requirements(cards=1, duration_hours=1, workload="training", gpu_model="H100-80G")
    )
    assert reconcile() == []


def _payment_state(invoice: Invoice) -> tuple:
    return (
        Invoice.objects.filter(pk=invoice.pk)
        .values_list("status", "amount_paid", "payment_attempts", "next_payment_attempt_at")
        .get(),
        PaymentAttempt.objects.filter(invoice=invoice).count(),
        JournalEntry.objects.filter(reference=invoice.reference).count(),
    )


@pytest.mark.parametrize("status", ["finalized", "uncollectible"])
def test_paying_with_no_card_on_file_and_none_given_is_a_409_that_changes_nothing(
    stripe, buyer, provider, buyer_client, status
) -> None:
    invoice = finalized_invoice(buyer, provider, number=None)
    Invoice.objects.filter(pk=invoice.pk).update(status=status)
    before = _payment_state(invoice)

    response = buyer_client.post(f"/api/v1/invoices/{invoice.pk}/pay/", {}, format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "no_payment_method"
    assert "payment_method" in error["message"] and "Stripe.js" in error["message"]
    assert _payment_state(invoice) == before


def test_a_card_given_with_the_payment_pays_an_invoice_that_had_none_on_file(
    stripe, buyer, provider, buyer_client
) -> None:
    invoice = finalized_invoice(buyer, provider, number=None)

    response = buyer_client.post(
        f"/api/v1/invoices/{invoice.pk}/pay/", {"payment_method": card(GOOD_CARD)}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "paid"


def test_voiding_a_paid_invoice_refunds_it_through_stripe(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider)
    attempt = invoice_collect(invoice_id=invoice.pk)

    invoice_void(invoice_id=invoice.pk, by="operator", reason="disputed")
    invoice_refund(invoice_id=invoice.pk)
    invoice_refund(invoice_id=invoice.pk)

    refunds = stripe_client().v1.refunds.list().data
    assert [(r.payment_intent, r.amount) for r in refunds] == [(attempt.payment_intent_id, invoice.amount_due)]
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.STRIPE_CLEARING) == 0
    assert reconcile() == []


# --- webhooks ----------------------------------------------------------------


def signed(event: Any, *, secret: str = "whsec_compute_grid_local", age: int = 0) -> tuple[bytes, str]:
    """The event signed as Stripe signs it, ``age`` seconds ago (a body given as bytes, as it is)."""
    payload = event if isinstance(event, bytes) else json.dumps(event).encode()
    timestamp = int(time.time()) - age
    signature = stripe_library.WebhookSignature._compute_signature(f"{timestamp}.{payload.decode()}", secret)
    return payload, f"t={timestamp},v1={signature}"


def intent_event(event_id: str, kind: str, attempt: PaymentAttempt) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": f"payment_intent.{kind}",
        "data": {
            "object": {
                "id": attempt.payment_intent_id or "pi_x",
                "object": "payment_intent",
                "metadata": {"attempt": str(attempt.pk)},
                "last_payment_error": {"code": "card_declined", "message": "declined"}
                if kind == "payment_failed"
                else None,
            }
        },
    }


def post_webhook(payload: bytes, signature: str):  # type: ignore[no-untyped-def]
    return Client().post(
        "/api/v1/webhooks/stripe/", payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


@pytest.fixture
def pending_attempt(buyer, provider) -> PaymentAttempt:  # type: ignore[no-untyped-def]
    invoice = finalized_invoice(buyer, provider, number=None)
    return PaymentAttempt.objects.create(
        invoice=invoice,
        number=1,
        amount=invoice.amount_due,
        idempotency_key=f"k-{invoice.pk}",
        payment_intent_id="pi_hook",
    )


def test_a_succeeded_webhook_replayed_five_times_pays_once(pending_attempt) -> None:
    payload, signature = signed(intent_event("evt_1", "succeeded", pending_attempt))

    answers = [post_webhook(payload, signature).status_code for _ in range(5)]

    assert answers == [200] * 5
    assert StripeEvent.objects.get(event_id="evt_1").status == "processed"
    assert JournalEntry.objects.filter(kind="payment.stripe").count() == 1
    assert Invoice.objects.get(pk=pending_attempt.invoice_id).status == "paid"
    assert reconcile() == []


def test_a_failure_arriving_after_the_success_changes_nothing(pending_attempt) -> None:
    post_webhook(*signed(intent_event("evt_ok", "succeeded", pending_attempt)))

    post_webhook(*signed(intent_event("evt_late_fail", "payment_failed", pending_attempt)))

    pending_attempt.refresh_from_db()
    assert pending_attempt.status == "succeeded"
    assert Invoice.objects.get(pk=pending_attempt.invoice_id).status == "paid"


@pytest.mark.parametrize(
    "signing",
    [
        {"secret": "whsec_somebody_else"},
        {"age": 3600},  # older than the tolerance: a replay
        {"age": -3600},  # from the future, beyond the tolerance: no more believable
    ],
    ids=["another-secret", "stale", "future"],
)
def test_a_webhook_with_a_bad_or_stale_signature_is_refused_and_not_stored(pending_attempt, signing) -> None:  # type: ignore[no-untyped-def]
    payload, signature = signed(intent_event("evt_bad", "succeeded", pending_attempt), **signing)

    response = post_webhook(payload, signature)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not StripeEvent.objects.exists()
    assert Invoice.objects.get(pk=pending_attempt.invoice_id).status == "finalized"


def test_a_webhook_signed_within_the_tolerance_of_a_clock_ahead_is_accepted(pending_attempt) -> None:
    response = post_webhook(*signed(intent_event("evt_ahead", "succeeded", pending_attempt), age=-60))

    assert response.status_code == 200
    assert StripeEvent.objects.get(event_id="evt_ahead").status == "processed"


def _with_object(pending_attempt: PaymentAttempt, **fields: Any) -> dict:
    event = intent_event("evt_odd", "payment_failed", pending_attempt)
    event["data"]["object"].update(fields)
    return event


@pytest.mark.parametrize(
    "body",
    [
        b"this is not JSON",
        b"[" * 1000 + b"]" * 1000,
        b'{"id": "evt_x", "type": "payment_intent.succeeded", "data": {"object": {"id": "\\ud800"}}}',
        b'["a list, not an event"]',
        b'{"type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": 7, "type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": "evt_x", "type": ["payment_intent.succeeded"], "data": {"object": {}}}',
        b'{"id": "evt_x", "type": "payment_intent.succeeded"}',
        b'{"id": "evt_x", "type": "payment_intent.succeeded", "data": []}',
        b'{"id": "evt_x", "type": "payment_intent.succeeded", "data": {"object": "pi_1"}}',
        b'{"id": "evt_\\u0000", "type": "payment_intent.succeeded", "data": {"object": {}}}',
        lambda attempt: _with_object(attempt, metadata="attempt"),
        lambda attempt: _with_object(attempt, last_payment_error="declined"),
        lambda attempt: _with_object(attempt, last_payment_error={"code": 5}),
        lambda attempt: _with_object(attempt, amount_received="lots"),
        lambda attempt: _with_object(attempt, id={"nested": True}),
        lambda attempt: {**_with_object(attempt), "id": "e" * 101},
    ],
    ids=["not-json", "deep", "lone-surrogate", "list", "no-id", "id-number", "type-list", "no-data",
         "data-list", "object-string", "nul", "metadata-string", "error-string", "error-code-number",
         "amount-string", "intent-id-object", "id-too-long"],
)  # fmt: skip
def test_a_signed_webhook_that_cannot_be_processed_is_a_400_and_kept_for_inspection(pending_attempt, body) -> None:  # type: ignore[no-untyped-def]
    # given a body signed with the webhook secret, but not an event this service can read
    payload, signature = signed(body(pending_attempt) if callable(body) else body)

    # when Stripe delivers it, twice
    answers = [post_webhook(payload, signature) for _ in range(2)]

    # then it is refused with a 400 each time (not a 500), kept once as received, and nothing moved
    assert [answer.status_code for answer in answers] == [400, 400]
    assert answers[0].json()["error"]["code"] == "unprocessable_webhook"
    kept = UnprocessableWebhook.objects.get()
    assert (bytes(kept.body), kept.deliveries) == (payload, 2)
    assert kept.error and kept.error in answers[0].json()["error"]["message"]
    assert not StripeEvent.objects.exists()
    assert Invoice.objects.get(pk=pending_attempt.invoice_id).status == "finalized"


def test_an_unsigned_body_that_cannot_be_processed_is_refused_and_not_kept(pending_attempt) -> None:
    _, signature = signed({"id": "evt_other"})

    response = post_webhook(b"this is not JSON", signature)

    assert response.json()["error"]["code"] == "invalid_signature"
    assert not UnprocessableWebhook.objects.exists()


def test_a_body_that_is_not_utf8_is_refused_as_unverifiable_not_a_500(pending_attempt) -> None:
    # Stripe signs the body as text: bytes that are not UTF-8 cannot carry its signature
    payload = b"\xff\xfe not UTF-8"
    timestamp = int(time.time())
    mac = hmac.new(b"whsec_compute_grid_local", f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()

    response = post_webhook(payload, f"t={timestamp},v1={mac}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"


def test_an_unprocessable_webhook_is_listed_in_the_admin(pending_attempt, admin_client) -> None:
    post_webhook(*signed(b"this is not JSON"))
    kept = UnprocessableWebhook.objects.get()

    listing = admin_client.get("/admin/billing/unprocessablewebhook/")
    page = admin_client.get(f"/admin/billing/unprocessablewebhook/{kept.pk}/change/")

    assert listing.status_code == page.status_code == 200
    assert "this is not JSON" in page.content.decode()


def test_a_webhook_for_an_unknown_payment_intent_is_a_harmless_no_op(pending_attempt) -> None:
    event = intent_event("evt_other", "succeeded", pending_attempt)
    event["data"]["object"] = {"id": "pi_unknown", "object": "payment_intent", "metadata": {}}

    response = post_webhook(*signed(event))

    assert response.status_code == 200
    assert StripeEvent.objects.get(event_id="evt_other").status == "ignored"
    assert not JournalEntry.objects.filter(kind="payment.stripe").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_collections_of_one_invoice_charge_once(stripe) -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    invoice = finalized_invoice(buyer, provider)
    barrier = threading.Barrier(4)

    def collect() -> None:
        barrier.wait()
        try:
            invoice_collect(invoice_id=invoice.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=collect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    succeeded = [pi for pi in stripe_client().v1.payment_intents.list().data if pi.status == "succeeded"]
    assert len(succeeded) == 1
    assert JournalEntry.objects.filter(kind="payment.stripe").count() == 1
    assert reconcile() == []


def test_a_collection_that_died_before_calling_stripe_is_picked_up_again_later(stripe, buyer, provider) -> None:
    from billing.services.payments import _open_attempt, payments_due

    invoice = finalized_invoice(buyer, provider)
    with time_machine.travel(APRIL_5, tick=False):
        _open_attempt(invoice.pk)  # recorded, then the worker died

    assert payments_due(now=APRIL_5) == []
    assert payments_due(now=APRIL_5 + timedelta(minutes=11)) == [invoice.pk]
    attempt = invoice_collect(invoice_id=invoice.pk)
    assert attempt is not None and (attempt.number, attempt.status) == (1, "succeeded")
    assert Invoice.objects.get(pk=invoice.pk).next_payment_attempt_at is None


def test_paying_while_stripe_cannot_be_reached_is_a_503_and_charges_nothing(
    stripe, buyer, provider, make_client, settings
) -> None:
    invoice = finalized_invoice(buyer, provider)
    with socket.socket() as closed:  # a port nothing listens on: Stripe is down
        closed.bind(("127.0.0.1", 0))
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed.getsockname()[1]}"

        response = make_client(buyer).post(f"/api/v1/invoices/{invoice.pk}/pay/", {}, format="json")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payment_provider_unavailable"
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("finalized", 0)
    assert reconcile() == []
