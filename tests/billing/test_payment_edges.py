"""Payments racing voids and transfers, and refunds that must not be lost (issue 15, points 7 to 10).

Each race is played step by step: the collection run makes and confirms the PaymentIntent at
localstripe, the operator acts through the API, and Stripe's webhook arrives, in the order that
lost money before.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import stripe as stripe_library
from django.db import connection
from django.utils import timezone

from billing.models import CreditGrant, Invoice, JournalEntry, PaymentAttempt, Refund
from billing.services.invoices import invoice_void
from billing.services.ledger import Purpose, balance_of
from billing.services.payments import invoice_collect, invoice_refund, refunds_due, refunds_make_due
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from core.locks import advisory_lock
from tests.billing.test_payments import finalized_invoice, intent_event, post_webhook, signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(operator, make_client):  # type: ignore[no-untyped-def]
    return make_client(operator)


@contextmanager
def answer_lost() -> Iterator[None]:
    """Stripe charges the card when asked to confirm, but its answer never comes back."""
    client = stripe_client()
    confirm = client.v1.payment_intents.confirm

    def charged_then_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
        confirm(*args, **kwargs)
        raise stripe_library.APIConnectionError("connection lost after Stripe answered")

    client.v1.payment_intents.confirm = charged_then_lost  # type: ignore[method-assign]
    try:
        yield
    finally:
        del client.v1.payment_intents.confirm


def charged_but_unbooked(invoice: Invoice) -> PaymentAttempt:
    """The collection run charged the card; the attempt is pending until Stripe's webhook says so."""
    with answer_lost(), pytest.raises(stripe_library.APIConnectionError):
        invoice_collect(invoice_id=invoice.pk)
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert attempt.status == "pending"
    assert stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id).status == "succeeded"
    return attempt


def made_not_confirmed(invoice: Invoice) -> PaymentAttempt:
    """The collection run made the PaymentIntent and died before confirming it."""
    client = stripe_client()

    def died(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise stripe_library.APIConnectionError("the worker died before confirming")

    client.v1.payment_intents.confirm = died  # type: ignore[method-assign]
    try:
        with pytest.raises(stripe_library.APIConnectionError):
            invoice_collect(invoice_id=invoice.pk)
    finally:
        del client.v1.payment_intents.confirm
    attempt = PaymentAttempt.objects.get(invoice=invoice)
    assert client.v1.payment_intents.retrieve(attempt.payment_intent_id).status == "requires_confirmation"
    return attempt


@contextmanager
def lock_held_elsewhere(name: str) -> Iterator[None]:
    """An advisory lock held by another session (another worker) until the block ends."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with advisory_lock(name) as mine:
                assert mine
                taken.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(30)
    try:
        yield
    finally:
        release.set()
        thread.join()


def voided_behind_its_back(invoice: Invoice, attempt: PaymentAttempt) -> None:
    """The invoice is voided while its attempt reads as settled (any stale read may do it); the
    attempt is still pending at Stripe's end."""
    PaymentAttempt.objects.filter(pk=attempt.pk).update(status="failed")
    invoice_void(invoice_id=invoice.pk, by="operator")
    PaymentAttempt.objects.filter(pk=attempt.pk).update(status="pending")


def stripe_refunds() -> list[tuple[str, int]]:
    return sorted((refund.payment_intent, refund.amount) for refund in stripe_client().v1.refunds.list().data)


def webhook_succeeded(attempt: PaymentAttempt, event_id: str) -> int:
    return post_webhook(*signed(intent_event(event_id, "succeeded", attempt))).status_code


def void(operator_client, invoice: Invoice):  # type: ignore[no-untyped-def]
    return operator_client.post(f"/api/v1/invoices/{invoice.pk}/void/", {"reason": "disputed"}, format="json")


def transfer(operator_client, invoice: Invoice, amount: int):  # type: ignore[no-untyped-def]
    return operator_client.post(
        f"/api/v1/invoices/{invoice.pk}/bank-transfer/",
        {"amount": f"{amount / 100:.2f}", "currency": "CNY"},
        format="json",
    )


# --- 7. a card charge landing on a voided invoice ------------------------------------------


def test_a_charge_that_completed_while_the_operator_voided_is_booked_and_refunded(
    stripe, buyer, provider, operator_client
) -> None:
    # given a charge Stripe made whose answer the collection run has not yet learned
    invoice = finalized_invoice(buyer, provider)
    attempt = charged_but_unbooked(invoice)

    # when the operator voids, and then Stripe's webhook arrives (twice)
    response = void(operator_client, invoice)
    answers = [webhook_succeeded(attempt, "evt_late"), webhook_succeeded(attempt, "evt_late")]
    refunds_make_due()  # the sweep (the refund task queued at commit does the same), twice
    refunds_make_due()

    # then the charge is booked once and refunded once, and the void invoice keeps nothing
    assert response.status_code == 200, response.json()
    assert answers == [200, 200]
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("void", attempt.amount, attempt.amount)
    assert stripe_refunds() == [(attempt.payment_intent_id, invoice.amount_due)]
    assert JournalEntry.objects.filter(kind="payment.stripe").count() == 1
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.STRIPE_CLEARING) == 0
    assert reconcile() == []


def test_voiding_cancels_a_payment_intent_not_yet_confirmed(stripe, buyer, provider, operator_client) -> None:
    invoice = finalized_invoice(buyer, provider)
    attempt = made_not_confirmed(invoice)

    response = void(operator_client, invoice)
    invoice_collect(invoice_id=invoice.pk)  # the collection run comes back for its attempt

    assert response.status_code == 200, response.json()
    assert stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id).status == "canceled"
    attempt.refresh_from_db()
    assert (attempt.status, attempt.failure_code) == ("failed", "canceled")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("void", 0)
    assert not Refund.objects.exists()
    assert reconcile() == []


def test_voiding_while_collection_talks_to_stripe_is_a_409_that_changes_nothing(
    stripe, buyer, provider, operator_client
) -> None:
    invoice = finalized_invoice(buyer, provider)

    with lock_held_elsewhere(f"invoice-collect:{invoice.pk}"):  # the collection run, confirming
        response = void(operator_client, invoice)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "payment_in_flight"
    invoice.refresh_from_db()
    assert invoice.status == "finalized"


def test_a_payment_succeeding_on_a_void_invoice_is_booked_and_refunded_at_once(stripe, buyer, provider) -> None:
    # given an invoice voided behind the attempt's back (any way it may happen)
    invoice = finalized_invoice(buyer, provider)
    attempt = charged_but_unbooked(invoice)
    voided_behind_its_back(invoice, attempt)

    # when Stripe's webhook says the charge succeeded
    assert webhook_succeeded(attempt, "evt_on_void") == 200

    # then it is booked, and its refund is recorded in the same transaction and made
    refund = Refund.objects.get()
    assert (refund.attempt_id, refund.amount, refund.reason, refund.method) == (
        attempt.pk, invoice.amount_due, "void", "stripe"
    )  # fmt: skip
    invoice_refund(invoice_id=invoice.pk)
    assert stripe_refunds() == [(attempt.payment_intent_id, invoice.amount_due)]
    assert reconcile() == []


def test_a_payment_on_a_void_invoice_is_held_as_bank_credit_when_so_configured(
    stripe, buyer, provider, settings
) -> None:
    settings.BILLING_PAYMENTS_RETURNED_AS = "bank_credit"
    invoice = finalized_invoice(buyer, provider)
    attempt = charged_but_unbooked(invoice)
    voided_behind_its_back(invoice, attempt)

    webhook_succeeded(attempt, "evt_credit")
    webhook_succeeded(attempt, "evt_credit_again")

    grant = CreditGrant.objects.get(buyer=buyer)
    assert (grant.source, grant.amount) == ("refund", invoice.amount_due)
    assert stripe_refunds() == []
    assert JournalEntry.objects.filter(kind="bank.grant.refund").count() == 1
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert reconcile() == []


# --- 8. a bank transfer while a card attempt is in flight ----------------------------------


def test_a_transfer_recorded_while_the_card_was_charged_is_booked_and_the_overpayment_refunded(
    stripe, buyer, provider, operator_client
) -> None:
    # given a charge Stripe made whose answer the collection run has not yet learned
    invoice = finalized_invoice(buyer, provider)
    attempt = charged_but_unbooked(invoice)

    # when the operator records the buyer's bank transfer, and then Stripe's webhook arrives (twice)
    recorded = transfer(operator_client, invoice, invoice.amount_due)
    answers = [webhook_succeeded(attempt, "evt_twice"), webhook_succeeded(attempt, "evt_twice_again")]
    refunds_make_due()
    refunds_make_due()

    # then the card payment is booked, never a 500, and what was paid twice goes back to the card
    assert recorded.status_code == 200, recorded.json()
    assert answers == [200, 200]
    attempt.refresh_from_db()
    assert attempt.status == "succeeded"
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == (
        "paid", 2 * invoice.amount_due, invoice.amount_due
    )  # fmt: skip
    assert stripe_refunds() == [(attempt.payment_intent_id, invoice.amount_due)]
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.BANK_TRANSFER_CLEARING) == invoice.amount_due
    assert reconcile() == []


def test_the_collection_run_cancels_the_card_attempt_of_an_invoice_a_transfer_paid(
    stripe, buyer, provider, operator_client
) -> None:
    invoice = finalized_invoice(buyer, provider)
    attempt = made_not_confirmed(invoice)

    transfer(operator_client, invoice, invoice.amount_due)
    invoice_collect(invoice_id=invoice.pk)
    invoice_collect(invoice_id=invoice.pk)

    assert stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id).status == "canceled"
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", invoice.amount_due)
    assert reconcile() == []


def test_a_pending_attempt_of_a_paid_invoice_is_swept_by_the_collection_run(
    stripe, buyer, provider, operator_client
) -> None:
    from billing.services.payments import payments_due

    invoice = finalized_invoice(buyer, provider)
    made_not_confirmed(invoice)
    transfer(operator_client, invoice, invoice.amount_due)

    later = timezone.now() + timedelta(hours=1)

    assert payments_due(now=later) == [invoice.pk]


# --- 9. a bank transfer on a voided invoice ------------------------------------------------


def test_voiding_returns_a_transfer_as_a_recorded_refund(stripe, buyer, provider, operator_client) -> None:
    invoice = finalized_invoice(buyer, provider, number=None)
    transfer(operator_client, invoice, 5000)

    response = void(operator_client, invoice)
    again = void(operator_client, invoice)

    assert response.status_code == 200, response.json()
    assert again.json()["error"]["code"] == "invoice_not_voidable"
    refund = Refund.objects.get()
    assert (refund.method, refund.status, refund.amount, refund.attempt_id) == (
        "bank_transfer",
        "succeeded",
        5000,
        None,
    )
    assert JournalEntry.objects.filter(kind="refund.bank_transfer").count() == 1
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.BANK_TRANSFER_CLEARING) == 0
    assert response.json()["amount_refunded"] == "50.00"
    assert reconcile() == []


def test_voiding_returns_a_transfer_as_bank_credit_when_so_configured(
    stripe, buyer, provider, operator_client, settings
) -> None:
    settings.BILLING_PAYMENTS_RETURNED_AS = "bank_credit"
    invoice = finalized_invoice(buyer, provider, number=None)
    transfer(operator_client, invoice, invoice.amount_due)

    void(operator_client, invoice)
    void(operator_client, invoice)  # again: not voidable, changes nothing

    grant = CreditGrant.objects.get(buyer=buyer)
    assert (grant.source, grant.amount, grant.remaining) == ("refund", invoice.amount_due, invoice.amount_due)
    assert Refund.objects.get().method == "bank_credit"
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.BANK_TRANSFER_CLEARING) == invoice.amount_due  # the money stays with us
    assert reconcile() == []


# --- 10. a refund whose Stripe call fails ----------------------------------------------------


def test_a_refund_whose_stripe_call_fails_is_kept_and_made_by_the_sweep(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider)
    attempt = invoice_collect(invoice_id=invoice.pk)
    client = stripe_client()

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise stripe_library.APIConnectionError("Stripe is down")

    client.v1.refunds.create = down  # type: ignore[method-assign]
    try:
        invoice_void(invoice_id=invoice.pk, by="operator")
        invoice_refund(invoice_id=invoice.pk)  # the refund task, once
    finally:
        del client.v1.refunds.create
    refund = Refund.objects.get()
    assert (refund.status, refund.tries) == ("pending", 1)
    assert "Stripe is down" in refund.last_error

    later = timezone.now() + timedelta(hours=1)
    assert refunds_due(now=later) == [invoice.pk]
    refunds_make_due(now=later)
    refunds_make_due(now=later)

    refund.refresh_from_db()
    assert refund.status == "succeeded"
    assert stripe_refunds() == [(attempt.payment_intent_id, invoice.amount_due)]
    assert refunds_due(now=later) == []
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert reconcile() == []


def test_a_refund_whose_answer_was_lost_is_found_at_stripe_not_made_twice(stripe, buyer, provider) -> None:
    invoice = finalized_invoice(buyer, provider)
    attempt = invoice_collect(invoice_id=invoice.pk)
    client = stripe_client()
    create = client.v1.refunds.create

    def made_then_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
        create(*args, **kwargs)
        raise stripe_library.APIConnectionError("connection lost")

    client.v1.refunds.create = made_then_lost  # type: ignore[method-assign]
    try:
        invoice_void(invoice_id=invoice.pk, by="operator")
        invoice_refund(invoice_id=invoice.pk)
    finally:
        del client.v1.refunds.create

    refunds_make_due(now=timezone.now() + timedelta(hours=1))

    assert stripe_refunds() == [(attempt.payment_intent_id, invoice.amount_due)]
    assert Refund.objects.get().status == "succeeded"
    assert reconcile() == []


# --- reconcile catches the kind ---------------------------------------------------------------


def test_reconcile_flags_a_void_invoice_keeping_a_card_payment(stripe, buyer, provider, monkeypatch) -> None:
    # given case 7 as it was: a charge booked on a void invoice, nothing given back (the fix removed)
    from billing.services import payments

    invoice = finalized_invoice(buyer, provider)
    attempt = charged_but_unbooked(invoice)
    voided_behind_its_back(invoice, attempt)
    monkeypatch.setattr(payments, "payments_give_back", lambda **kwargs: [])
    assert webhook_succeeded(attempt, "evt_kept") == 200

    # when the books are reconciled
    differences = reconcile()

    # then the void invoice keeping money is reported
    assert [(d.check, d.subject, d.ledger, d.expected) for d in differences] == [
        ("void invoice keeps money", invoice.number, attempt.amount, 0)
    ]


def test_reconcile_flags_a_succeeded_payment_intent_left_unbooked(stripe, buyer, provider, operator_client) -> None:
    # given case 8 as it was: the transfer paid, Stripe's webhook for the card charge stored but never
    # processed (its processing failed), the attempt pending
    from billing.services.payments import webhook_receive

    invoice = finalized_invoice(buyer, provider)
    attempt = charged_but_unbooked(invoice)
    transfer(operator_client, invoice, invoice.amount_due)
    payload, signature = signed(intent_event("evt_failed_500", "succeeded", attempt))
    webhook_receive(payload=payload, signature=signature)

    differences = reconcile()

    assert [(d.check, d.subject, d.expected) for d in differences] == [
        ("payment intent succeeded, not booked", attempt.payment_intent_id, attempt.amount)
    ]
