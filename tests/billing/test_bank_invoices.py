"""The compute bank at invoice finalization: vouchers first, then bank credit, then the card (Stripe)."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.utils import timezone

from billing.models import BankEvent, CreditGrant, CreditHold, Invoice, JournalEntry
from billing.services.bank.grants import bank_settings_set
from billing.services.bank.holds import holds_review
from billing.services.bank.state import expected_cost
from billing.services.invoices import draft_lines, invoice_finalize, invoice_void
from billing.services.ledger import Purpose, balance_of
from billing.services.payments import invoice_collect, payment_method_set
from billing.services.reconcile import reconcile
from billing.services.usage import usage_rollup_buckets
from billing.stripe_client import stripe_client
from core.money import round_to_fen, share
from core.timezones import local_zone
from marketplace.models import Lease
from marketplace.services import lease_start
from pools.tariffs import hour_bands
from tests.billing.factories import credit, leased, prepaid, usage
from tests.billing.test_bank_holds import booked
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.billing.test_payments import GOOD_CARD, card
from tests.vouchers.factories import program_factory, voucher_factory

pytestmark = pytest.mark.django_db


@pytest.fixture
def voucher(buyer, issuer):  # type: ignore[no-untyped-def]
    program = program_factory(issuer, coverage_share="0.2", valid_until=datetime(2027, 1, 1, tzinfo=UTC))
    return voucher_factory(program, buyer, face_value=10_000_000)


def march_usage(buyer, provider) -> None:  # type: ignore[no-untyped-def]
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    for day in range(1, 6):
        usage(lease, shanghai(day, 12), seconds=8 * 3600)


def test_a_real_invoice_is_paid_by_vouchers_then_bank_credit_then_the_card(
    stripe, buyer, provider, issuer, voucher, buyer_client
) -> None:
    # given March usage, a 20% voucher, 500.00 of credit in two grants and a card on file
    march_usage(buyer, provider)
    expiring = credit(buyer, 30_000, at=SETUP, expires_at=datetime(2026, 6, 1, tzinfo=UTC))
    paid = credit(buyer, 20_000, source="top_up", at=SETUP)
    payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))

    # when the invoice is finalized and collected
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    attempt = invoice_collect(invoice_id=invoice.pk)

    # then vouchers paid their share of every line, the bank what they left up to its balance, the card the rest
    lines = list(invoice.lines.all())
    assert invoice.voucher_credit == sum(share(line.amount, Decimal("0.2"))[0] for line in lines) > 0
    assert invoice.subtotal - invoice.voucher_credit > 50_000
    assert invoice.bank_credit == 50_000
    assert invoice.amount_due == invoice.subtotal - invoice.voucher_credit - 50_000 > 0
    assert [CreditGrant.objects.get(pk=g.pk).remaining for g in (expiring, paid)] == [0, 0]
    assert attempt is not None and attempt.status == "succeeded"
    intent = stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id)
    assert (intent.amount, intent.status) == (invoice.amount_due, "succeeded")
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    # and the ledger agrees: nothing owed, the bank emptied, its draw booked against the invoice
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert balance_of(purpose=Purpose.BANK_PAID, organization=buyer) == 0
    assert balance_of(purpose=Purpose.BANK_GRANTED, organization=buyer) == 0
    assert balance_of(purpose=Purpose.BANK_CLEARING, organization=buyer) == 0
    assert balance_of(purpose=Purpose.STRIPE_CLEARING) == invoice.amount_due + 20_000  # the card, and the top-up
    shown = buyer_client.get(f"/api/v1/invoices/{invoice.pk}/").json()
    assert (shown["bank_credit"], shown["voucher_credit"]) == ("500.00", str(Decimal(invoice.voucher_credit) / 100))
    draws = [m for m in buyer_client.get("/api/v1/bank/transactions/").json()["results"] if m["reason"] == "draw"]
    assert sorted(m["amount"] for m in draws) == ["-200.00", "-300.00"]
    assert {JournalEntry.objects.get(pk=m["ledger_entry"]).kind for m in draws} == {"bank.draw"}
    assert reconcile() == []


def test_an_invoice_the_bank_covers_is_paid_at_finalization_without_a_charge(stripe, buyer, provider) -> None:
    march_usage(buyer, provider)
    credit(buyer, 10_000_000)

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    assert (invoice.status, invoice.amount_due, invoice.bank_credit) == ("paid", 0, invoice.subtotal)
    assert invoice_collect(invoice_id=invoice.pk) is None
    assert not stripe_client().v1.payment_intents.list().data
    assert reconcile() == []


def test_voiding_the_invoice_gives_the_credit_back_to_its_grants(buyer, provider) -> None:
    march_usage(buyer, provider)
    grant = credit(buyer, 30_000, at=SETUP)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5)

    assert CreditGrant.objects.get(pk=grant.pk).remaining == 30_000
    assert balance_of(purpose=Purpose.BANK_GRANTED, organization=buyer) == -30_000
    assert balance_of(purpose=Purpose.BANK_CLEARING, organization=buyer) == 0
    assert reconcile() == []


def test_a_prepaid_lease_ended_for_insufficient_funds_is_billed_exactly_for_what_it_used(
    stripe, buyer, provider, make_client, settings
) -> None:
    # given a prepaid buyer whose credit covers the first hour of a six-hour lease and a little more
    settings.BANK_HOLD_HORIZON_HOURS, settings.BANK_LEASE_GRACE_SECONDS = 1, 600
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=2)
    lease = booked(prepaid(buyer), provider, hours=6, at=start)
    credit(buyer, expected_cost(lease=lease, at=start) + 500, at=start - timedelta(minutes=1))
    payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    lease_start(lease_id=lease.pk, by="test", now=start)
    agent = make_client(provider)

    def report(minutes: range) -> None:
        events = [
            {
                "specversion": "1.0",
                "id": f"minute-{minute}",
                "source": "agent://bank-test",
                "type": "compute.gpu_seconds",
                "subject": str(lease.pk),
                "time": (start + timedelta(minutes=minute, seconds=30)).isoformat(),
                "data": {"quantity": 120, "cards": 2},
            }
            for minute in minutes
        ]
        answer = agent.generic("POST", "/api/v1/usage-events/", orjson.dumps(events), content_type="application/json")
        assert answer.json()["accepted"] == len(events), answer.json()
        usage_rollup_buckets(buckets={(lease.pk, start.replace(minute=0) + timedelta(hours=h)) for h in range(3)})

    # when its agent reports the first hour, the bank warns, and ends the lease after the grace
    report(range(60))
    assert holds_review(now=start + timedelta(hours=1)) == {"warned": 1}
    assert holds_review(now=start + timedelta(minutes=70)) == {"ended": 1}
    lease.refresh_from_db()
    assert (lease.status, lease.end_reason, lease.ended_at) == (
        "preempted",
        "insufficient_funds",
        start + timedelta(minutes=70),
    )
    assert CreditHold.objects.get(lease=lease).status == "released"
    # and the minutes up to the end, flushed late by the agent, are accepted too
    report(range(60, 70))

    # then each month's invoice bills exactly the 70 minutes of two cards at the price of each hour
    invoices = []
    for invoice in Invoice.objects.filter(buyer=buyer).order_by("period_start"):
        invoices.append(invoice_finalize(invoice_id=invoice.pk, now=invoice.period_end + timedelta(hours=1)))
        invoice_collect(invoice_id=invoice.pk)
    lines = [line for invoice in invoices for line in invoice.lines.all()]
    card_hours = sum(line.quantity for line in lines)  # stored to 10 places
    assert abs(card_hours - Decimal(70 * 120) / 3600) < Decimal("1e-9")
    plan = lease.pool.price_plans.get()
    bands = hour_bands(lease.pool.hub.tariff)
    seconds_by_rate: dict[tuple[str, Decimal], int] = defaultdict(int)
    for minute in range(70):
        local = (start + timedelta(minutes=minute)).astimezone(local_zone()).hour
        seconds_by_rate[(bands[local], Decimal(plan.hour_prices[local]))] += 120
    expected = sum(round_to_fen(Decimal(s) / 3600 * rate) for (_, rate), s in seconds_by_rate.items())
    assert sum(invoice.subtotal for invoice in invoices) == expected
    # the bank paid what it had, the card the rest, and nothing is lost
    granted = CreditGrant.objects.get(buyer=buyer).amount
    bank_credit = sum(invoice.bank_credit for invoice in invoices)
    assert bank_credit == min(granted, expected)
    assert all(Invoice.objects.get(pk=invoice.pk).status == "paid" for invoice in invoices)
    assert sum(Invoice.objects.get(pk=i.pk).amount_paid for i in invoices) == expected - bank_credit
    assert balance_of(purpose=Purpose.BANK_GRANTED, organization=buyer) == -(granted - bank_credit)
    assert balance_of(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == 0
    assert Lease.objects.get(pk=lease.pk).status == "preempted"
    assert reconcile() == []


def test_a_batch_of_invoices_draws_each_from_its_own_buyers_bank(provider) -> None:
    from billing.services.invoices import invoice_for_period, invoices_finalize
    from tests.factories import BuyerFactory

    buyers = [BuyerFactory() for _ in range(3)]
    for buyer, fen in zip(buyers, (1_000, 10_000_000, 0), strict=True):
        march_usage(buyer, provider)
        if fen:
            credit(buyer, fen, at=SETUP)
    drafts = [invoice_for_period(buyer=buyer, at=shanghai(15, 12)) for buyer in buyers]

    assert invoices_finalize(invoice_ids=[invoice.pk for invoice in drafts], now=APRIL_5) == 3

    finalized = [Invoice.objects.get(pk=invoice.pk) for invoice in drafts]
    assert [invoice.bank_credit for invoice in finalized] == [1_000, finalized[1].subtotal, 0]
    assert [invoice.status for invoice in finalized] == ["finalized", "paid", "finalized"]
    assert [invoice.amount_due for invoice in finalized] == [
        finalized[0].subtotal - 1_000,
        0,
        finalized[2].subtotal,
    ]
    assert reconcile() == []


def test_pending_usage_is_what_no_finalized_invoice_billed_late_usage_included(buyer, provider) -> None:
    from billing.services.bank.state import bank_state

    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    usage(lease, shanghai(3, 12), seconds=8 * 3600)
    before = bank_state(buyer_id=buyer.pk, at=APRIL_5).pending_usage
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    assert before == invoice.subtotal > 0
    assert bank_state(buyer_id=buyer.pk, at=APRIL_5).pending_usage == 0

    usage(lease, shanghai(3, 12), seconds=16 * 3600)  # late events of a billed hour: as much again

    assert bank_state(buyer_id=buyer.pk, at=APRIL_5).pending_usage == invoice.subtotal


def low_balance_events(buyer) -> int:  # type: ignore[no-untyped-def]
    return BankEvent.objects.filter(buyer=buyer, kind=BankEvent.Kind.LOW_BALANCE).count()


def test_finalizing_an_invoice_the_bank_pays_raises_no_false_low_balance_event(buyer, provider) -> None:
    # given 10,000.00 of credit, March usage the bank pays, and a threshold the balance left stays above
    march_usage(buyer, provider)
    credit(buyer, 1_000_000, at=SETUP)
    subtotal = sum(line.amount for line in draft_lines(march_invoice(buyer)))
    assert 0 < subtotal < 500_000
    bank_settings_set(buyer=buyer, changes={"low_balance_threshold": 1_000_000 - subtotal - subtotal // 2})

    # when the invoice is finalized
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    # then the bank paid it and the buyer is not told of a low balance it does not have
    assert invoice.bank_credit == subtotal
    assert low_balance_events(buyer) == 0


def test_finalizing_an_invoice_that_takes_the_bank_below_its_threshold_tells_the_buyer_once(buyer, provider) -> None:
    march_usage(buyer, provider)
    credit(buyer, 1_000_000, at=SETUP)
    subtotal = sum(line.amount for line in draft_lines(march_invoice(buyer)))
    bank_settings_set(buyer=buyer, changes={"low_balance_threshold": 1_000_000 - subtotal + 1})

    invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    assert low_balance_events(buyer) == 1
