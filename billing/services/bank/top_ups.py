"""Top-ups: a buyer buys credit through a Stripe PaymentIntent.

The top-up is recorded, then its PaymentIntent made (``metadata.top_up`` and the
top-up's own row, keyed by the unique PaymentIntent id, tell it apart from an
invoice's payment); the buyer confirms it with the client secret. The credit is
granted when Stripe says the PaymentIntent succeeded (the webhook, or the answer
to an automatic top-up's confirmation), under the top-up's row lock and only from
``pending``: once per PaymentIntent, however often the news comes.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext

from billing.models import Bank, BankEvent, CreditGrant, StripeCustomer, TopUp
from billing.services.bank.grants import bank_event, grant_create
from billing.services.bank.state import bank_state
from billing.stripe_client import stripe_client
from core.exceptions import ApplicationError
from core.money import FEN_PER_YUAN, format_yuan
from organizations.models import Organization

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=1)


def top_up_check(*, amount: int, currency: str) -> None:
    """Refuse what cannot be a top-up, with a stable code (nothing is recorded)."""
    if currency != settings.DEFAULT_CURRENCY:
        raise ApplicationError(
            gettext("Top-ups are in %(DEFAULT_CURRENCY)s only.") % {"DEFAULT_CURRENCY": settings.DEFAULT_CURRENCY},
            code="unsupported_currency",
            fields={"currency": [{"code": "unsupported_currency", "message": f"Use {settings.DEFAULT_CURRENCY}."}]},
        )
    maximum = settings.BANK_TOP_UP_MAX_YUAN * FEN_PER_YUAN
    if amount <= 0:
        raise ApplicationError(
            gettext("A top-up must be more than 0.00."),
            code="invalid_amount",
            fields={"amount": [{"code": "invalid_amount", "message": "Give an amount above 0.00."}]},
        )
    if amount > maximum:
        raise ApplicationError(
            gettext("A top-up may be at most %(format_yuan)s %(currency)s; split it or ask us for a bank transfer.")
            % {"format_yuan": format_yuan(maximum), "currency": currency},
            code="amount_too_large",
            fields={"amount": [{"code": "amount_too_large", "message": f"At most {format_yuan(maximum)}."}]},
        )


def top_up_create(*, buyer: Organization, amount: int, currency: str) -> tuple[TopUp, str]:
    """Record a top-up and make its PaymentIntent; returns it and the client secret to confirm it with."""
    from billing.services.payments import stripe_customer_for

    currency = currency.upper()
    top_up_check(amount=amount, currency=currency)
    customer = _stripe(lambda: stripe_customer_for(buyer))
    top_up = TopUp.objects.create(buyer=buyer, amount=amount, currency=currency)
    intent = _stripe(
        lambda: stripe_client().v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": currency.lower(),
                "customer": customer.customer_id,
                "payment_method_types": settings.STRIPE_PAYMENT_METHOD_TYPES,  # type: ignore[typeddict-unknown-key]
                "metadata": {"top_up": str(top_up.pk), "buyer": str(buyer.pk)},
            },
            options={"idempotency_key": top_up.reference},
        )
    )
    TopUp.objects.filter(pk=top_up.pk).update(payment_intent_id=intent.id)
    top_up.payment_intent_id = intent.id
    logger.info("top-up created", extra={"buyer": str(buyer.pk), "top_up": str(top_up.pk), "amount": amount})
    return top_up, str(intent.client_secret)


def top_up_client_secret(*, payment_intent_id: str) -> str:
    """The client secret of a top-up's PaymentIntent, asked of Stripe: this service does not keep
    it (a replayed answer to ``POST bank/top-ups/`` gets it here)."""
    intent = _stripe(lambda: stripe_client().v1.payment_intents.retrieve(payment_intent_id))
    return str(intent.client_secret)


def _stripe(call: Any) -> Any:
    try:
        return call()
    except stripe.StripeError as exc:
        logger.warning("stripe refused a top-up", extra={"error": str(exc)})
        raise ApplicationError(
            gettext("The payment provider could not be reached or refused the request; try again shortly."),
            code="payment_provider_error",
            status_code=502,
        ) from None


def top_up_for_intent(intent: dict[str, Any]) -> TopUp | None:
    """The top-up a PaymentIntent (from a webhook) pays for, if it is one of ours."""
    top_up = TopUp.objects.filter(payment_intent_id=intent.get("id")).first() if intent.get("id") else None
    return top_up


@transaction.atomic
def top_up_succeeded(*, top_up_id: Any, amount: int, currency: str, now: datetime | None = None) -> bool:
    """Grant the credit of a top-up Stripe charged, once (the top-up row is locked, and a succeeded
    one is never granted again). Returns whether this call granted it."""
    now = now or timezone.now()
    # Its row alone: the buyer's is never locked FOR UPDATE (billing.locks); the grant locks the bank.
    top_up = TopUp.objects.select_for_update(of=("self",)).select_related("buyer").get(pk=top_up_id)
    # A failed payment is not final: the buyer may confirm the same PaymentIntent again with another card.
    if top_up.status == TopUp.Status.SUCCEEDED:
        return False
    if (amount, currency.upper()) != (top_up.amount, top_up.currency):
        logger.error(
            "top-up charged another amount",
            extra={"top_up": str(top_up.pk), "charged": amount, "currency": currency, "expected": top_up.amount},
        )
        raise ApplicationError(gettext("Stripe charged another amount than the top-up's."), code="amount_mismatch")
    grant = grant_create(
        buyer=top_up.buyer,
        source=CreditGrant.Source.TOP_UP,
        amount=top_up.amount,
        by="stripe",
        note=f"PaymentIntent {top_up.payment_intent_id}",
        reference=top_up.reference,
        now=now,
    )
    TopUp.objects.filter(pk=top_up.pk).update(status=TopUp.Status.SUCCEEDED, grant=grant, settled_at=now)
    return True


@transaction.atomic
def top_up_failed(*, top_up_id: Any, message: str, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    if not TopUp.objects.filter(pk=top_up_id, status=TopUp.Status.PENDING).update(
        status=TopUp.Status.FAILED, failure_message=message[:500], settled_at=now
    ):
        return False
    top_up = TopUp.objects.get(pk=top_up_id)
    bank_event(
        buyer_id=top_up.buyer_id,
        kind=BankEvent.Kind.TOP_UP_FAILED,
        message=f"The top-up of {format_yuan(top_up.amount)} {top_up.currency} failed: {message or 'declined'}.",
        now=now,
    )
    return True


def top_up_apply_event(*, top_up: TopUp, event_type: str, intent: dict[str, Any]) -> tuple[str, str]:
    """Act on a webhook about a top-up's PaymentIntent; returns the event's status and error."""
    if event_type == "payment_intent.succeeded":
        try:
            top_up_succeeded(
                top_up_id=top_up.pk,
                amount=int(intent.get("amount_received") or intent.get("amount") or 0),
                currency=str(intent.get("currency") or ""),
            )
        except ApplicationError as exc:
            return "failed", exc.message
        return "processed", ""
    if event_type == "payment_intent.payment_failed":
        error = intent.get("last_payment_error") or {}
        top_up_failed(top_up_id=top_up.pk, message=error.get("message") or error.get("code") or "")
        return "processed", ""
    return "ignored", ""


def bank_auto_top_up(*, buyer_id: Any) -> TopUp | None:
    """Charge the card on file the buyer's automatic top-up amount, if its credit is below its threshold.
    One automatic top-up is in flight per buyer at a time (a unique constraint)."""
    bank = Bank.objects.filter(organization_id=buyer_id).first()
    customer = StripeCustomer.objects.filter(organization_id=buyer_id).exclude(default_payment_method="").first()
    if bank is None or bank.auto_top_up_threshold is None or bank.auto_top_up_amount is None or customer is None:
        return None
    if bank_state(buyer_id=buyer_id, at=timezone.now()).available >= bank.auto_top_up_threshold:
        return None
    try:
        with transaction.atomic():
            top_up = TopUp.objects.create(
                buyer_id=buyer_id, amount=bank.auto_top_up_amount, currency=bank.currency, automatic=True
            )
    except IntegrityError:  # one is already in flight
        return None
    return _charge(top_up, customer)


def _charge(top_up: TopUp, customer: StripeCustomer) -> TopUp:
    client = stripe_client()
    try:
        intent = client.v1.payment_intents.create(
            params={
                "amount": top_up.amount,
                "currency": top_up.currency.lower(),
                "customer": customer.customer_id,
                "payment_method": customer.default_payment_method,
                "payment_method_types": settings.STRIPE_PAYMENT_METHOD_TYPES,  # type: ignore[typeddict-unknown-key]
                "metadata": {"top_up": str(top_up.pk), "buyer": str(top_up.buyer_id), "automatic": "true"},
            },
            options={"idempotency_key": top_up.reference},
        )
        TopUp.objects.filter(pk=top_up.pk).update(payment_intent_id=intent.id)
        confirmed = client.v1.payment_intents.confirm(
            intent.id, options={"idempotency_key": f"{top_up.reference}:confirm"}
        )
    except stripe.CardError as exc:
        top_up_failed(top_up_id=top_up.pk, message=exc.user_message or exc.code or "card declined")
    else:
        if confirmed.status == "succeeded":
            top_up_succeeded(top_up_id=top_up.pk, amount=confirmed.amount, currency=confirmed.currency)
    top_up.refresh_from_db()
    return top_up


def top_ups_settle_stale(*, now: datetime | None = None) -> int:
    """Top-ups pending for a while (a worker died, a webhook never came): ask Stripe. One it charged is
    granted; an automatic one that did not complete fails, so that it never blocks the next (a buyer's
    own top-up stays pending: the buyer may still confirm it). Returns how many were settled."""
    now = now or timezone.now()
    settled = 0
    for top_up in TopUp.objects.filter(status=TopUp.Status.PENDING, created_at__lt=now - STALE_AFTER).order_by(
        "created_at"
    ):
        status = (
            stripe_client().v1.payment_intents.retrieve(top_up.payment_intent_id).status
            if top_up.payment_intent_id
            else None
        )
        if status == "succeeded":
            settled += top_up_succeeded(top_up_id=top_up.pk, amount=top_up.amount, currency=top_up.currency)
        elif top_up.automatic:
            # Whatever Stripe still waits for (a confirmation its worker never sent, an authentication
            # nobody is there to give, a payment still processing) fails it: a charge that completes
            # later is still granted by its webhook, and the next automatic top-up is not blocked.
            if top_up.payment_intent_id and status in CANCELABLE:
                _cancel(top_up.payment_intent_id)
            settled += top_up_failed(top_up_id=top_up.pk, message="The automatic top-up did not complete.")
    return settled


# The PaymentIntent statuses Stripe can still cancel.
CANCELABLE = ("requires_payment_method", "requires_confirmation", "requires_action", "requires_capture")


def _cancel(payment_intent_id: str) -> None:
    try:
        stripe_client().v1.payment_intents.cancel(payment_intent_id)
    except stripe.StripeError as exc:  # it moved on meanwhile: its webhook tells what became of it
        logger.warning("a stale top-up's PaymentIntent was not canceled", extra={"error": str(exc)})
