"""Collecting invoices through Stripe, and Stripe's webhooks.

Record first, then call Stripe: an attempt is stored (and committed) before
its PaymentIntent is made; the PaymentIntent is made unconfirmed and its id
stored before it is confirmed. A worker killed at any point leaves an attempt
that the next run picks up: a PaymentIntent never made is made, one never
confirmed is confirmed, one already charged is found charged. The service
never relies on Stripe's idempotency keys to avoid a second charge.

A success or failure, whether learned from the API answer or a webhook, is
applied by a conditional update of the attempt's status: only the first one
moves money.

Money an invoice must give back is recorded first, in the transaction that made it
due, then sent: a payment that lands on a void invoice, or pays an invoice twice (a
card charge and a bank transfer), is booked and a refund recorded at once; a void
records the refund of everything the invoice received. Card payments go back through
Stripe, tried again by the sweep until Stripe made them; bank transfers are recorded
as refunded by the operator; or, as configured, both are held as compute-bank credit.
An attempt whose invoice no longer owes anything (paid by transfer, voided) is not
confirmed: its PaymentIntent is canceled, or booked and refunded if Stripe had
already charged it.
"""

import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext
from rest_framework.exceptions import ParseError

from billing import metrics
from billing.locks import invoice_lock
from billing.models import (
    CreditGrant,
    Invoice,
    PaymentAttempt,
    Refund,
    StripeCustomer,
    StripeEvent,
    UnprocessableWebhook,
)
from billing.selectors import invoice_owed
from billing.services.ledger import Purpose, account_for, entry_post
from billing.stripe_client import stripe_client
from core.exceptions import ApplicationError, ConflictError
from core.locks import advisory_lock
from core.money import format_yuan
from core.parsers import NUL_MESSAGE, has_nul, parse_json
from organizations.models import AuditEvent, Organization
from organizations.services import audit_record

logger = logging.getLogger(__name__)

COLLECTIBLE = (Invoice.Status.FINALIZED,)


def stripe_customer_for(organization: Organization) -> StripeCustomer:
    """The buyer's Stripe customer, made on first use (recorded before any charge)."""
    existing = StripeCustomer.objects.filter(organization=organization).first()
    if existing:
        return existing
    customer = stripe_client().v1.customers.create(
        params={"name": organization.legal_name, "metadata": {"organization": str(organization.pk)}},
        options={"idempotency_key": f"customer:{organization.pk}"},
    )
    record, _ = StripeCustomer.objects.get_or_create(organization=organization, defaults={"customer_id": customer.id})
    return record


def payment_method_set(*, organization: Organization, payment_method: str) -> StripeCustomer:
    """Attach a card (made client-side with Stripe.js) to the buyer's customer as its default."""
    customer = stripe_customer_for(organization)
    try:
        stripe_client().v1.payment_methods.attach(payment_method, params={"customer": customer.customer_id})
    except stripe.CardError as exc:
        raise ApplicationError(
            gettext("The card was declined: %(user_message)s") % {"user_message": exc.user_message},
            code="card_declined",
        ) from None
    except stripe.InvalidRequestError as exc:
        raise ApplicationError(
            gettext("Stripe refused the payment method: %(user_message)s") % {"user_message": exc.user_message},
            code="invalid_payment_method",
        ) from None
    customer.default_payment_method = payment_method
    customer.save(update_fields=["default_payment_method"])
    return customer


def _open_attempt(invoice_id: Any, now: datetime | None = None) -> PaymentAttempt | None:
    """The invoice's pending attempt, or a new one recorded now; None if nothing is to be collected.

    The invoice stays due again a little later, so that if this run dies before it learns the
    outcome, the next collection run (Celery beat) finishes the attempt.
    """
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        retry_at = (now or timezone.now()) + timedelta(seconds=settings.BILLING_COLLECTION_RETRY_SECONDS)
        pending = invoice.attempts.filter(status=PaymentAttempt.Status.PENDING).first()
        if pending:  # finished whatever became of the invoice meanwhile
            if _collectible(invoice):
                Invoice.objects.filter(pk=invoice.pk).update(next_payment_attempt_at=retry_at)
            return pending
        if not _collectible(invoice):
            return None
        number = invoice.payment_attempts + 1
        Invoice.objects.filter(pk=invoice.pk).update(payment_attempts=number, next_payment_attempt_at=retry_at)
        return PaymentAttempt.objects.create(
            invoice=invoice,
            number=number,
            amount=invoice_owed(invoice),
            currency=invoice.currency,
            idempotency_key=f"invoice:{invoice.pk}:attempt:{number}",
        )


def _collectible(invoice: Invoice) -> bool:
    return invoice.status in COLLECTIBLE and invoice_owed(invoice) > 0


def invoice_collect(*, invoice_id: Any, now: datetime | None = None) -> PaymentAttempt | None:
    """Charge what the invoice still owes to the buyer's card on file. Safe to run again at any
    time; while one run talks to Stripe about an invoice, another for the same invoice does nothing."""
    with advisory_lock(f"invoice-collect:{invoice_id}") as mine:
        return _collect(invoice_id, now or timezone.now()) if mine else None


def _collect(invoice_id: Any, now: datetime) -> PaymentAttempt | None:
    attempt = _open_attempt(invoice_id, now)
    if attempt is None:
        return None
    invoice = Invoice.objects.get(pk=attempt.invoice_id)
    if not _collectible(invoice):  # paid by a transfer or voided since the attempt was recorded
        _attempt_settle(attempt, now)
        return PaymentAttempt.objects.get(pk=attempt.pk)
    customer = StripeCustomer.objects.filter(organization_id=invoice.buyer_id).first()
    if customer is None or not customer.default_payment_method:
        payment_failed(
            attempt_id=attempt.pk, code="no_payment_method", message="The buyer has no card on file.", now=now
        )
        return PaymentAttempt.objects.get(pk=attempt.pk)
    client = stripe_client()
    if attempt.payment_intent_id is None:
        intent = client.v1.payment_intents.create(
            params={
                "amount": attempt.amount,
                "currency": attempt.currency.lower(),
                "customer": customer.customer_id,
                "payment_method": customer.default_payment_method,
                "payment_method_types": settings.STRIPE_PAYMENT_METHOD_TYPES,  # type: ignore[typeddict-unknown-key]
                "metadata": {"invoice": str(invoice.pk), "number": str(invoice.number), "attempt": str(attempt.pk)},
            },
            options={"idempotency_key": attempt.idempotency_key},
        )
        updated = PaymentAttempt.objects.filter(pk=attempt.pk, payment_intent_id__isnull=True).update(
            payment_intent_id=intent.id
        )
        if not updated:  # another run made one first; use that one, this one is never confirmed
            attempt.refresh_from_db()
        else:
            attempt.payment_intent_id = intent.id
    intent = client.v1.payment_intents.retrieve(attempt.payment_intent_id)  # type: ignore[arg-type]
    if intent.status == "succeeded":
        payment_succeeded(attempt_id=attempt.pk, now=now)
    elif intent.status in ("requires_confirmation", "requires_payment_method") and not intent.last_payment_error:
        try:
            confirmed = client.v1.payment_intents.confirm(
                intent.id,
                params=_confirm_params(),  # type: ignore[arg-type]
                options={"idempotency_key": f"{attempt.idempotency_key}:confirm"},
            )
        except stripe.CardError as exc:
            payment_failed(
                attempt_id=attempt.pk, code=exc.code or "card_error", message=exc.user_message or "", now=now
            )
        else:
            if confirmed.status == "succeeded":
                payment_succeeded(attempt_id=attempt.pk, now=now)
    elif intent.last_payment_error:
        payment_failed(
            attempt_id=attempt.pk,
            code=intent.last_payment_error.code or "payment_failed",
            message=intent.last_payment_error.message or "",
            now=now,
        )
    return PaymentAttempt.objects.get(pk=attempt.pk)


CANCELABLE = ("requires_payment_method", "requires_confirmation", "requires_action", "requires_capture")


def _attempt_settle(attempt: PaymentAttempt, now: datetime) -> None:
    """Finish an attempt its invoice no longer needs, without charging: a PaymentIntent Stripe
    already charged is booked (and its money given back by ``payment_succeeded``), one not charged
    is canceled; one Stripe is still processing stays pending (the collection run comes back)."""
    if attempt.payment_intent_id is None:  # never sent to Stripe, or never confirmed by it
        _attempt_canceled(attempt.pk, now)
        return
    client = stripe_client()
    intent = client.v1.payment_intents.retrieve(attempt.payment_intent_id)
    if intent.status in CANCELABLE:
        try:
            intent = client.v1.payment_intents.cancel(intent.id)
        except stripe.InvalidRequestError:  # it moved on meanwhile: see where to
            intent = client.v1.payment_intents.retrieve(attempt.payment_intent_id)
    if intent.status == "succeeded":
        payment_succeeded(attempt_id=attempt.pk, now=now)
    elif intent.status == "canceled":
        _attempt_canceled(attempt.pk, now)


def _attempt_canceled(attempt_id: Any, now: datetime) -> bool:
    """An attempt given up without a charge: no dunning, the invoice no longer owes."""
    return bool(
        PaymentAttempt.objects.filter(pk=attempt_id, status=PaymentAttempt.Status.PENDING).update(
            status=PaymentAttempt.Status.FAILED,
            failure_code="canceled",
            failure_message="Not charged: the invoice was paid otherwise or voided.",
            updated_at=now,
        )
    )


def attempts_settle(*, invoice_id: Any, now: datetime | None = None) -> None:
    """Before a void: cancel the invoice's open PaymentIntents, book those Stripe already charged.
    The caller holds the invoice's collection lock (no collection run talks to Stripe meanwhile)."""
    now = now or timezone.now()
    with _stripe_unavailable_is_503("Stripe could not be reached to cancel the payment in flight; nothing was voided."):
        for attempt in PaymentAttempt.objects.filter(invoice_id=invoice_id, status=PaymentAttempt.Status.PENDING):
            _attempt_settle(attempt, now)


def _confirm_params() -> dict[str, Any]:
    """The card was given when the PaymentIntent was made; the buyer is not there to confirm."""
    return {"off_session": True} if settings.STRIPE_CONFIRM_OFF_SESSION else {}


@transaction.atomic
def payment_succeeded(*, attempt_id: Any, now: datetime | None = None) -> bool:
    """Book a successful attempt once: the invoice is paid and the ledger moves the money."""
    now = now or timezone.now()
    if not PaymentAttempt.objects.filter(pk=attempt_id, status=PaymentAttempt.Status.PENDING).update(
        status=PaymentAttempt.Status.SUCCEEDED
    ):
        return False
    metrics.count_on_commit(metrics.CARD_PAYMENT_SUCCEEDED)
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    invoice = invoice_lock(invoice_id=attempt.invoice_id)  # its buyer's orders hold is decided in turn
    entry_post(
        kind="payment.stripe",
        description=f"Card payment of invoice {invoice.number} ({format_yuan(attempt.amount)} {attempt.currency})",
        reference=invoice.reference,
        legs=[
            (account_for(purpose=Purpose.STRIPE_CLEARING), attempt.amount),
            (account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=invoice.buyer), -attempt.amount),
        ],
        at=now,
    )
    invoice.amount_paid += attempt.amount
    if invoice.amount_paid - invoice.amount_refunded >= invoice.amount_due and invoice.status in (
        Invoice.Status.FINALIZED,
        Invoice.Status.UNCOLLECTIBLE,
    ):
        invoice.status, invoice.paid_at, invoice.next_payment_attempt_at = Invoice.Status.PAID, now, None
    payments_give_back(invoice=invoice, now=now)  # paid on a void invoice, or paid twice
    invoice.save(update_fields=["amount_paid", "amount_refunded", "status", "paid_at", "next_payment_attempt_at"])
    orders_hold_release(invoice.buyer)
    return True


@transaction.atomic
def payment_failed(*, attempt_id: Any, code: str, message: str, now: datetime | None = None) -> bool:
    """Book a failed attempt once: retry on the dunning schedule, then give up as uncollectible."""
    now = now or timezone.now()
    if not PaymentAttempt.objects.filter(pk=attempt_id, status=PaymentAttempt.Status.PENDING).update(
        status=PaymentAttempt.Status.FAILED, failure_code=code[:100], failure_message=message[:500]
    ):
        return False
    metrics.count_on_commit(metrics.CARD_PAYMENT_FAILED)
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    invoice = invoice_lock(invoice_id=attempt.invoice_id)  # its buyer's orders hold is decided in turn
    if invoice.status != Invoice.Status.FINALIZED:
        return True
    schedule = settings.BILLING_DUNNING_DAYS
    if attempt.number <= len(schedule):
        first = invoice.attempts.order_by("number").values_list("created_at", flat=True).first() or now
        invoice.next_payment_attempt_at = max(first + timedelta(days=schedule[attempt.number - 1]), now)
        invoice.save(update_fields=["next_payment_attempt_at"])
    else:
        invoice.status, invoice.next_payment_attempt_at = Invoice.Status.UNCOLLECTIBLE, None
        invoice.save(update_fields=["status", "next_payment_attempt_at"])
        Organization.objects.filter(pk=invoice.buyer_id).update(
            orders_blocked_reason=f"Invoice {invoice.number} is unpaid: pay it to place new orders."
        )
    logger.info("payment failed", extra={"invoice": str(invoice.pk), "attempt": attempt.number, "code": code})
    return True


def orders_hold_release(buyer: Organization) -> None:
    """Lift the buyer's block on new orders once no uncollectible invoice of it is left (paid or voided)."""
    if (
        buyer.orders_blocked_reason
        and not Invoice.objects.filter(buyer=buyer, status=Invoice.Status.UNCOLLECTIBLE).exists()
    ):
        Organization.objects.filter(pk=buyer.pk).update(orders_blocked_reason="")


def _has_card_on_file(buyer_id: Any) -> bool:
    return StripeCustomer.objects.filter(organization_id=buyer_id).exclude(default_payment_method="").exists()


def invoice_pay(*, invoice: Invoice, payment_method: str | None) -> PaymentAttempt | None:
    """The buyer pays now, optionally with a new card; an uncollectible invoice becomes collectible again."""
    if invoice.status not in (Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE):
        raise ConflictError(
            gettext("A %(status)s invoice has nothing to pay.") % {"status": invoice.status}, code="invoice_not_payable"
        )
    if not payment_method and not _has_card_on_file(invoice.buyer_id):
        # Refused before anything is recorded: a failed attempt would count towards dunning.
        raise ConflictError(
            gettext(
                "There is no card on file to charge. Send a payment_method in this request's "
                "body (a Stripe PaymentMethod id, made with Stripe.js): it is saved as the card "
                "on file and charged; or pay by bank transfer."
            ),
            code="no_payment_method",
        )
    if payment_method:
        with _stripe_unavailable_is_503("Stripe could not be reached to save the card; nothing was charged."):
            payment_method_set(organization=invoice.buyer, payment_method=payment_method)
    Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.UNCOLLECTIBLE).update(status=Invoice.Status.FINALIZED)
    # An attempt already recorded is finished by the collection run once Stripe answers again.
    with _stripe_unavailable_is_503("Stripe could not be reached; the payment will be retried."):
        return invoice_collect(invoice_id=invoice.pk)


@contextmanager
def _stripe_unavailable_is_503(message: str) -> Iterator[None]:
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
        logger.warning("stripe unavailable: %s", exc)
        raise ApplicationError(
            gettext("%(message)s Try again later.") % {"message": message},
            code="payment_provider_unavailable",
            status_code=503,
        ) from None


def payments_due(*, now: datetime) -> list[Any]:
    """Invoices to collect now, and invoices with an attempt left pending (whatever became of the
    invoice: paid by transfer or voided meanwhile), for the collection run to finish it."""
    owing = (
        Invoice.objects.filter(
            status=Invoice.Status.FINALIZED,
            collection_method=Invoice.CollectionMethod.STRIPE,
            next_payment_attempt_at__lte=now,
        )
        .filter(amount_paid__lt=F("amount_due") + F("amount_refunded"))
        .values_list("pk", flat=True)
    )
    stale = now - timedelta(seconds=settings.BILLING_COLLECTION_RETRY_SECONDS)
    left = PaymentAttempt.objects.filter(status=PaymentAttempt.Status.PENDING, updated_at__lte=stale).values_list(
        "invoice_id", flat=True
    )
    return sorted({*owing, *left}, key=str)


@transaction.atomic
def bank_transfer_record(*, invoice: Invoice, amount: int, by: str, now: datetime | None = None) -> Invoice:
    """An operator records a bank transfer received for an invoice."""
    now = now or timezone.now()
    locked = invoice_lock(invoice_id=invoice.pk)  # its buyer's orders hold is decided in turn
    if locked.status not in (Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE):
        raise ConflictError(
            gettext("A %(status)s invoice takes no payment.") % {"status": locked.status}, code="invoice_not_payable"
        )
    if not 0 < amount <= invoice_owed(locked):
        raise ApplicationError(
            gettext("The transfer must be between 0.01 and %(format_yuan)s.")
            % {"format_yuan": format_yuan(invoice_owed(locked))},
            code="invalid_amount",
        )
    entry_post(
        kind="payment.bank_transfer",
        description=f"Bank transfer for invoice {locked.number}, recorded by {by}",
        reference=locked.reference,
        legs=[
            (account_for(purpose=Purpose.BANK_TRANSFER_CLEARING), amount),
            (account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=locked.buyer), -amount),
        ],
        at=now,
    )
    # A card attempt in flight is not refused: the transfer arrived whatever it does. The collection
    # run cancels the attempt (the invoice owes nothing), or books and refunds a charge Stripe made.
    locked.amount_paid += amount
    if not invoice_owed(locked):
        locked.status, locked.paid_at, locked.next_payment_attempt_at = Invoice.Status.PAID, now, None
    locked.save(update_fields=["amount_paid", "status", "paid_at", "next_payment_attempt_at"])
    metrics.count_on_commit(metrics.BANK_TRANSFER_RECORDED)
    audit_record(
        actor=by,
        action=AuditEvent.Action.INVOICE_BANK_TRANSFER,
        target=locked,
        organization=locked.buyer,
        summary={"number": locked.number, "amount": format_yuan(amount), "status": locked.status},
    )
    orders_hold_release(locked.buyer)
    return locked


# --- giving money back ---------------------------------------------------------


@transaction.atomic
def payments_give_back(*, invoice: Invoice, now: datetime) -> list[Refund]:
    """Record the return of what ``invoice`` (locked) received beyond what it keeps: everything
    of a void invoice, the excess of one paid twice. Card payments go back first, the latest
    first (what came last was not needed), then bank transfers. Stores the invoice's
    ``amount_paid`` and ``amount_refunded`` together (never overpaid in between)."""
    keeps = 0 if invoice.status == Invoice.Status.VOID else invoice.amount_due
    excess = invoice.amount_paid - invoice.amount_refunded - keeps
    if excess <= 0:
        return []
    reason = Refund.Reason.VOID if invoice.status == Invoice.Status.VOID else Refund.Reason.OVERPAYMENT
    given: dict[Any, int] = defaultdict(int)
    for attempt_id, amount in Refund.objects.filter(invoice=invoice).values_list("attempt_id", "amount"):
        given[attempt_id] += amount
    refunds = []
    card_total = 0
    for attempt in invoice.attempts.filter(status=PaymentAttempt.Status.SUCCEEDED).order_by("-number"):
        card_total += attempt.amount
        part = min(excess, attempt.amount - given[attempt.pk])
        if part > 0:
            refunds.append(_refund_record(invoice, attempt, part, reason, now))
            excess -= part
    part = min(excess, invoice.amount_paid - card_total - given[None])
    if part > 0:
        refunds.append(_refund_record(invoice, None, part, reason, now))
    invoice.amount_refunded += sum(refund.amount for refund in refunds)
    Invoice.objects.filter(pk=invoice.pk).update(
        amount_paid=invoice.amount_paid, amount_refunded=invoice.amount_refunded
    )
    if any(refund.status == Refund.Status.PENDING for refund in refunds):
        invoice_id = str(invoice.pk)
        # Recorded already: if the broker does not take the task, the sweep (refunds_make_due) makes it.
        transaction.on_commit(lambda: _queue_refund(invoice_id), robust=True)
    return refunds


def _refund_record(invoice: Invoice, attempt: PaymentAttempt | None, amount: int, reason: str, now: datetime) -> Refund:
    if settings.BILLING_PAYMENTS_RETURNED_AS == "bank_credit":
        method = Refund.Method.BANK_CREDIT
    else:
        method = Refund.Method.STRIPE if attempt else Refund.Method.BANK_TRANSFER
    refund = Refund.objects.create(
        invoice=invoice,
        attempt=attempt,
        amount=amount,
        currency=invoice.currency,
        method=method,
        reason=reason,
        created_at=now,
        next_try_at=now,
    )
    paid_by = f"card payment #{attempt.number}" if attempt else "bank transfer"
    what = f"{format_yuan(amount)} {invoice.currency} of the {paid_by} of invoice {invoice.number} ({reason})"
    if method == Refund.Method.BANK_CREDIT:
        from billing.services.bank.grants import grant_create  # the bank builds on payments

        refund.grant = grant_create(
            buyer=invoice.buyer,
            source=CreditGrant.Source.REFUND,
            amount=amount,
            by="billing",
            note=f"Given back as credit: {what}",
            reference=f"refund:{refund.pk}",
            offset=Purpose.BUYER_RECEIVABLE,
            now=now,
        )
    elif method == Refund.Method.BANK_TRANSFER:
        entry_post(
            kind="refund.bank_transfer",
            description=f"Returned by bank transfer: {what}",
            reference=invoice.reference,
            legs=[
                (account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=invoice.buyer), amount),
                (account_for(purpose=Purpose.BANK_TRANSFER_CLEARING), -amount),
            ],
            at=now,
        )
    if method != Refund.Method.STRIPE:
        refund.status, refund.refunded_at, refund.next_try_at = Refund.Status.SUCCEEDED, now, None
        refund.save(update_fields=["grant", "status", "refunded_at", "next_try_at"])
    logger.info("refund recorded", extra={"invoice": str(invoice.pk), "amount": amount, "method": method})
    return refund


def _queue_refund(invoice_id: str) -> None:
    from billing.tasks import payment_refund

    payment_refund.delay(invoice_id)


def invoice_refund(*, invoice_id: Any, now: datetime | None = None) -> int:
    """Make through Stripe the invoice's card refunds still due; returns the fen refunded now.
    A refund Stripe does not make stays due, with its error, for the sweep."""
    pending = Refund.objects.filter(
        invoice_id=invoice_id, method=Refund.Method.STRIPE, status=Refund.Status.PENDING
    ).order_by("created_at", "pk")
    return sum(refund_make(refund_id=pk, now=now) for pk in pending.values_list("pk", flat=True))


def refund_make(*, refund_id: Any, now: datetime | None = None) -> int:
    """Make one recorded card refund through Stripe, once: a refund Stripe already made (its answer
    was lost) is found by its metadata and booked, never made twice."""
    now = now or timezone.now()
    with advisory_lock(f"refund:{refund_id}") as mine:
        if not mine:
            return 0
        refund = Refund.objects.select_related("attempt").get(pk=refund_id)
        if refund.status != Refund.Status.PENDING:
            return 0
        assert refund.attempt is not None
        client = stripe_client()
        params: Any = {
            "payment_intent": refund.attempt.payment_intent_id,
            "amount": refund.amount,
            "metadata": {"refund": str(refund.pk), "invoice": str(refund.invoice_id)},
        }
        try:
            made = _stripe_refund_of(refund) or client.v1.refunds.create(
                params=params, options={"idempotency_key": f"refund:{refund.pk}"}
            )
        except stripe.StripeError as exc:
            Refund.objects.filter(pk=refund.pk, status=Refund.Status.PENDING).update(
                tries=F("tries") + 1,
                last_error=str(exc)[:500],
                next_try_at=now + timedelta(seconds=settings.BILLING_REFUND_RETRY_SECONDS),
            )
            logger.warning("refund not made", extra={"refund": str(refund.pk), "error": str(exc)[:200]})
            return 0
        return _refund_made(refund_id=refund.pk, stripe_refund_id=made.id, now=now)


def _stripe_refund_of(refund: Refund) -> Any:
    assert refund.attempt is not None
    params: Any = {"payment_intent": refund.attempt.payment_intent_id, "limit": 100}
    listed: Any = stripe_client().v1.refunds.list(params=params)
    return next(
        (made for made in listed.data if (made.to_dict().get("metadata") or {}).get("refund") == str(refund.pk)), None
    )


@transaction.atomic
def _refund_made(*, refund_id: Any, stripe_refund_id: str, now: datetime) -> int:
    if not Refund.objects.filter(pk=refund_id, status=Refund.Status.PENDING).update(
        status=Refund.Status.SUCCEEDED, stripe_refund_id=stripe_refund_id, refunded_at=now, next_try_at=None
    ):
        return 0
    refund = Refund.objects.select_related("invoice__buyer", "attempt").get(pk=refund_id)
    invoice = refund.invoice
    entry_post(
        kind="refund.stripe",
        description=f"Refund to the card of invoice {invoice.number} ({refund.reason})",
        reference=invoice.reference,
        legs=[
            (account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=invoice.buyer), refund.amount),
            (account_for(purpose=Purpose.STRIPE_CLEARING), -refund.amount),
        ],
        at=now,
    )
    return refund.amount


def refunds_due(*, now: datetime) -> list[Any]:
    """Invoices with a card refund Stripe has not made yet and due to be tried again."""
    return list(
        Refund.objects.filter(status=Refund.Status.PENDING, method=Refund.Method.STRIPE, next_try_at__lte=now)
        .values_list("invoice_id", flat=True)
        .distinct()
        .order_by("invoice_id")
    )


def refunds_make_due(*, now: datetime | None = None) -> int:
    """The sweep: make every card refund due; returns the fen refunded."""
    now = now or timezone.now()
    return sum(invoice_refund(invoice_id=invoice_id, now=now) for invoice_id in refunds_due(now=now))


# --- webhooks ----------------------------------------------------------------


class _Unprocessable(Exception):
    """A signed webhook whose body this service cannot act on; the message says why."""


# The fields of a PaymentIntent that webhook_process reads, and the JSON types Stripe gives them.
_INTENT_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "metadata": (dict,),
    "last_payment_error": (dict,),
    "amount": (int,),
    "amount_received": (int,),
    "currency": (str,),
}


def _webhook_verify(payload: bytes, signature: str | None) -> None:
    """Stripe's signature of the body, made within the tolerance either side of now: a signature
    older is a replay, and one from further in the future than that is no more believable."""
    tolerance = settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
    try:
        stripe.WebhookSignature.verify_header(payload, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance)
        signed_at = int(next(part[2:] for part in (signature or "").split(",") if part.startswith("t=")))
        if signed_at > time.time() + tolerance:
            raise stripe.SignatureVerificationError(
                f"Timestamp in the future, beyond the tolerance ({signed_at})", signature, payload
            )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        metrics.WEBHOOK_INVALID_SIGNATURE.inc()
        raise ApplicationError(
            gettext("The Stripe signature does not verify: %(exc)s") % {"exc": exc}, code="invalid_signature"
        ) from None


def _webhook_event(payload: bytes) -> dict[str, Any]:
    """The event in a verified body, with the keys and types webhook_process reads; else _Unprocessable."""
    try:
        event = parse_json(payload)
    except ParseError as exc:
        raise _Unprocessable(f"The body is not JSON this service can read: {exc.detail}") from None
    if has_nul(event):
        raise _Unprocessable(NUL_MESSAGE)
    if not isinstance(event, dict):
        raise _Unprocessable("The body is not a JSON object (a Stripe event).")
    for name in ("id", "type"):
        if not isinstance(event.get(name), str) or not 0 < len(event[name]) <= 100:
            raise _Unprocessable(f"'{name}' must be a string of 1 to 100 characters.")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise _Unprocessable("'data.object' must be a JSON object.")
    for name, types in _INTENT_FIELDS.items():
        value = data["object"].get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise _Unprocessable(f"'data.object.{name}' must be {' or '.join(t.__name__ for t in types)} or null.")
    error = data["object"].get("last_payment_error") or {}
    if any(error.get(name) is not None and not isinstance(error[name], str) for name in ("code", "message")):
        raise _Unprocessable("'data.object.last_payment_error' code and message must be strings or null.")
    return event


def _webhook_keep_unprocessable(payload: bytes, error: str) -> None:
    """Keep the body for inspection, once per body however often Stripe delivers it again."""
    digest = hashlib.sha256(payload).hexdigest()
    kept, created = UnprocessableWebhook.objects.get_or_create(
        digest=digest, defaults={"body": payload, "error": error}
    )
    if not created:
        UnprocessableWebhook.objects.filter(pk=kept.pk).update(
            deliveries=F("deliveries") + 1, last_received_at=timezone.now()
        )
    metrics.WEBHOOK_UNPROCESSABLE.inc()
    logger.warning("unprocessable stripe webhook kept", extra={"webhook": str(kept.pk), "error": error})


def webhook_receive(*, payload: bytes, signature: str | None) -> StripeEvent:
    """Verify and store a webhook; the same event id again is stored once. A signed body that is not
    an event this service can read is kept apart (``UnprocessableWebhook``) and refused with a 400."""
    _webhook_verify(payload, signature)
    try:
        event = _webhook_event(payload)
    except _Unprocessable as exc:
        _webhook_keep_unprocessable(payload, str(exc))
        raise ApplicationError(
            gettext("The webhook is signed but cannot be processed: %(exc)s It was kept for inspection.")
            % {"exc": exc},
            code="unprocessable_webhook",
        ) from None
    record, _ = StripeEvent.objects.get_or_create(
        event_id=event["id"], defaults={"type": event["type"], "payload": event}
    )
    return record


def webhook_process(*, event_id: Any) -> StripeEvent:
    """Act on a stored event once; out-of-order and repeated deliveries change nothing."""
    from billing.services.bank.top_ups import top_up_apply_event, top_up_for_intent  # the bank builds on payments

    with transaction.atomic():
        record = StripeEvent.objects.select_for_update().get(pk=event_id)
        if record.status != StripeEvent.Status.RECEIVED:
            metrics.count_on_commit(metrics.WEBHOOK_DUPLICATE)
            return record
        intent = record.payload.get("data", {}).get("object", {})
        top_up = top_up_for_intent(intent)
        if top_up is not None:  # a compute bank top-up, not an invoice's payment
            record.status, record.error = top_up_apply_event(top_up=top_up, event_type=record.type, intent=intent)
            record.processed_at = timezone.now()
            record.save(update_fields=["status", "error", "processed_at"])
            metrics.webhook_counted(record.status)
            return record
        attempt_id = (intent.get("metadata") or {}).get("attempt")
        attempt = PaymentAttempt.objects.filter(pk=str(attempt_id)).first() if _is_uuid(attempt_id) else None
        if attempt is None:
            attempt = PaymentAttempt.objects.filter(payment_intent_id=intent.get("id")).first()
        if record.type not in ("payment_intent.succeeded", "payment_intent.payment_failed") or attempt is None:
            record.status = StripeEvent.Status.IGNORED
            record.error = "" if attempt else "No payment attempt of ours has this PaymentIntent."
        elif record.type == "payment_intent.succeeded":
            payment_succeeded(attempt_id=attempt.pk)
            record.status = StripeEvent.Status.PROCESSED
        else:
            error = intent.get("last_payment_error") or {}
            payment_failed(
                attempt_id=attempt.pk, code=error.get("code") or "payment_failed", message=error.get("message") or ""
            )
            record.status = StripeEvent.Status.PROCESSED
        record.processed_at = timezone.now()
        record.save(update_fields=["status", "error", "processed_at"])
        metrics.webhook_counted(record.status)
    return record


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
