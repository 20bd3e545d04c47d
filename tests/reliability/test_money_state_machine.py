"""The money state machine: random sequences of everything that moves money, against the real
service on PostgreSQL and against a small model in plain Python (``money_model``).

Each sequence (a Hypothesis example) starts from the same world (two buyers, two providers,
two issuers, a running lease of each buyer at each provider) and from empty books: it runs in
a savepoint rolled back at its end. Steps move a frozen clock through the months (usage,
month close, the grace, finalization) and call the services: usage through the ingest path and
the rollup, price versions, finalization (vouchers redeem through billing's hooks), voucher
issue, revocation and expiry, cards and collection through localstripe, payment outcomes
delivered by Stripe webhooks, bank transfers, voids and refunds. After every step the ledger
sums to zero, every balance equals the model's and ``reconcile`` is clean.

200 sequences by default; ``MONEY_SEQUENCES=2000`` (and ``MONEY_STEPS``) run more.
"""

import contextlib
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe as stripe_library
import time_machine
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing.models import Invoice, Leg, PaymentAttempt, ProviderStatement
from billing.services.invoices import invoice_finalize, invoice_void, invoices_due_for_finalizing, invoices_finalize
from billing.services.payments import (
    bank_transfer_record,
    invoice_collect,
    invoice_pay,
    invoice_refund,
    payment_method_set,
    webhook_process,
    webhook_receive,
)
from billing.services.reconcile import reconcile
from billing.services.usage import usage_events_ingest, usage_rollup_buckets
from billing.stripe_client import stripe_client
from core.exceptions import ApplicationError
from marketplace.services import lease_start
from organizations.models import Organization
from pools.models import ResourcePool
from pools.services import price_plan_create
from pools.tariffs import hour_bands
from tests.billing.factories import leased
from tests.factories import BuyerFactory, IssuerFactory, ProviderFactory
from tests.reliability import money_model as m
from vouchers.issuing import VoucherRequest
from vouchers.models import Voucher, VoucherProgram, YearlyCapUsage
from vouchers.services import program_create, program_open, voucher_revoke, vouchers_expire, vouchers_issue

pytestmark = pytest.mark.django_db

SEQUENCES = int(os.environ.get("MONEY_SEQUENCES", "200"))
STEPS = int(os.environ.get("MONEY_STEPS", "20"))

SETUP = datetime(2026, 1, 10, 0, tzinfo=UTC)
STARTED = SETUP + timedelta(hours=1)
START = datetime(2026, 1, 20, 2, tzinfo=UTC)  # 10:00 in Shanghai
CARDS = {"good": "4242424242424242", "declined": "4000000000000341", "refused": "4000000000000002"}
FACTORS = [
    {"peak": Decimal("1.5"), "flat": Decimal("1"), "valley": Decimal("0.5")},
    {"peak": Decimal("1"), "flat": Decimal("1"), "valley": Decimal("1")},
    {"peak": Decimal("2.25"), "flat": Decimal("1.1"), "valley": Decimal("0.35")},
]
SECONDS = st.one_of(
    st.integers(1, 90), st.integers(1, 8 * 3600), st.just(8 * 3600), st.integers(8 * 3600, 8 * 3600 + 1200)
)
# (buyer, hours before now, minutes before that, card-seconds): recent usage, and usage arriving late.
USAGE = st.tuples(st.integers(0, 1), st.integers(0, 72), st.integers(0, 59), SECONDS)
LATE_USAGE = st.tuples(st.integers(0, 1), st.integers(24, 24 * 40), st.integers(0, 59), SECONDS)


# What the sequences of a run did, printed at its end (the figures of docs/reliability.md).
SEEN: Counter[str] = Counter()


@dataclass
class World:
    """What every sequence starts from; made once per test, outside the sequences' savepoints."""

    buyers: list[Organization]
    providers: list[Organization]
    issuers: list[Organization]
    leases: list[Any]
    pools: dict[str, ResourcePool]


def build_world() -> World:
    buyers, providers = [BuyerFactory(), BuyerFactory()], [ProviderFactory(), ProviderFactory()]
    issuers = [IssuerFactory(), IssuerFactory()]
    hubs = [{"hub_id": "jingjinji", "province": "Beijing"}, {"hub_id": "yangtze", "province": "Shanghai"}]
    leases = []
    for buyer in buyers:  # leases[2 * buyer + provider]
        for provider, hub in zip(providers, hubs, strict=True):
            lease = leased(buyer=buyer, provider=provider, at=SETUP, time_of_use=FACTORS[0], **hub)
            leases.append(lease_start(lease_id=lease.pk, by="test", now=STARTED))
    pools = {str(pool.pk): pool for pool in ResourcePool.objects.filter(pk__in=[lease.pool_id for lease in leases])}
    return World(buyers, providers, issuers, leases, pools)


def new_card(number: str) -> str:
    """A card payment method made client-side (Stripe.js), as the buyer would."""
    card = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return stripe_client().v1.payment_methods.create(params={"type": "card", "card": card}).id  # type: ignore[typeddict-item]


class MoneyMachine(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        self.savepoint = transaction.savepoint()
        SEEN["sequences"] += 1
        self.clock = START
        self.events = 0
        self.sent: list[list[list[Any]]] = [[], []]  # per provider: [event, accepted]
        self.attempts: list[PaymentAttempt] = []
        self.model = m.MoneyModel(
            commission_rate=django_settings.PLATFORM_COMMISSION_RATE,
            hourly_tolerance=django_settings.USAGE_HOURLY_TOLERANCE,
            dunning_steps=len(django_settings.BILLING_DUNNING_DAYS),
        )
        for pool in self.world.pools.values():
            plan = pool.price_plans.get()
            factors = {band: Decimal(factor) for band, factor in plan.time_of_use.items()}
            self.model.pools[str(pool.pk)] = m.Pool(
                str(pool.pk),
                str(pool.provider_id),
                hour_bands(pool.hub.tariff),
                [m.Version(plan.effective_from, plan.price_per_card_hour, factors)],
            )
        for lease in self.world.leases:
            self.model.leases[str(lease.pk)] = m.Lease(
                str(lease.pk), self.model.pools[str(lease.pool_id)], str(lease.buyer_id), lease.cards
            )

    def teardown(self) -> None:
        transaction.savepoint_rollback(self.savepoint)

    # --- helpers ------------------------------------------------------------------------

    def at_clock(self) -> Any:
        return time_machine.travel(self.clock, tick=False)

    def expect(self, refusal: m.Refused | None, call: Any) -> Any:
        """Run the service call; it must be refused with the model's code, or succeed if the model allows it."""
        if refusal is None:
            return call()
        with pytest.raises(ApplicationError) as raised:
            call()
        assert raised.value.code == refusal.code, raised.value
        SEEN[f"refused: {refusal.code}"] += 1
        return None

    def predict(self, call: Any) -> tuple[Any, m.Refused | None]:
        try:
            return call(), None
        except m.Refused as refusal:
            return None, refusal

    def invoice(self, key: tuple[str, datetime]) -> Invoice:
        return Invoice.objects.get(buyer_id=key[0], period_start=key[1])

    def pick(self, items: list[Any], index: int) -> Any:
        return items[index % len(items)]

    # --- the world of this sequence -------------------------------------------------------

    @initialize(
        programs=st.lists(
            st.tuples(
                st.sampled_from([Decimal("0.2"), Decimal("0.3"), Decimal("0.5"), Decimal("0.6"), Decimal("1")]),
                st.integers(20_000, 400_000),  # budget
                st.integers(5_000, 200_000),  # yearly cap
                st.integers(30, 400),  # days of validity
                st.booleans(),  # only the first provider is approved
            ),
            min_size=1,
            max_size=2,
        )
    )
    def open_programs(self, programs: list[tuple[Decimal, int, int, int, bool]]) -> None:
        for index, (coverage, budget, cap, days, approved_only) in enumerate(programs):
            issuer = self.world.issuers[index]
            with self.at_clock():
                program = program_create(
                    issuer=issuer,
                    name=f"program {index}",
                    budget=budget,
                    coverage_share=coverage,
                    per_company_yearly_cap=cap,
                    valid_from=SETUP,
                    valid_until=START + timedelta(days=days),
                    providers=self.world.providers[:1] if approved_only else (),
                    by="test",
                    now=self.clock,
                )
                program_open(program=program, by="test", now=self.clock)
            self.model.programs[str(program.pk)] = m.Program(
                str(program.pk),
                str(issuer.pk),
                budget,
                coverage,
                cap,
                SETUP,
                START + timedelta(days=days),
                frozenset({str(self.world.providers[0].pk)}) if approved_only else frozenset(),
            )

    # --- time, usage and prices -----------------------------------------------------------

    @rule(hours=st.one_of(st.integers(1, 24), st.integers(1, 24 * 12)), jobs=st.booleans())
    def time_passes(self, hours: int, jobs: bool) -> None:
        """Days pass; the scheduled jobs (finalizing closed months, expiring vouchers) run or are late."""
        self.clock += timedelta(hours=hours)
        if jobs:
            self.scheduled_jobs_run()

    @rule(hours=st.integers(0, 48))
    def the_month_closes(self, hours: int) -> None:
        """The clock moves past the end of the month and its grace for late usage; the jobs run."""
        grace = timedelta(hours=django_settings.BILLING_FINALIZE_GRACE_HOURS)
        self.clock = m.month_of(self.clock - grace)[1] + grace + timedelta(hours=hours)
        SEEN["month closes"] += 1
        self.scheduled_jobs_run()

    @rule(provider=st.integers(0, 1), usage=st.lists(USAGE, min_size=1, max_size=4), replay=st.integers(0, 1000))
    def usage_is_reported(self, provider: int, usage: list[tuple[int, int, int, int]], replay: int) -> None:
        self.ingest(provider, usage, replay)

    @rule(provider=st.integers(0, 1), usage=st.lists(LATE_USAGE, min_size=1, max_size=2))
    def late_usage_is_reported(self, provider: int, usage: list[tuple[int, int, int, int]]) -> None:
        self.ingest(provider, usage, None)

    def ingest(self, provider: int, usage: list[tuple[int, int, int, int]], replay: int | None) -> None:
        """A batch of one provider's usage events, with one sent before again if ``replay`` picks one."""
        organization = self.world.providers[provider]
        batch: list[tuple[dict[str, Any], bool]] = []
        for buyer, hours_back, minute, seconds in usage:
            lease = self.world.leases[2 * buyer + provider]
            at = max(STARTED, self.clock - timedelta(hours=hours_back, minutes=minute))
            self.events += 1
            event = {
                "specversion": "1.0",
                "id": f"evt-{self.events}",
                "source": "agent://machine/pool",
                "type": "compute.gpu_seconds",
                "subject": str(lease.pk),
                "time": at.isoformat(),
                "data": {"quantity": seconds, "cards": lease.cards},
            }
            batch.append(
                (event, self.model.report_usage(lease_id=str(lease.pk), at=at, seconds=seconds, now=self.clock))
            )
        earlier, duplicates = self.sent[provider], 0
        if replay is not None and earlier:
            sent = self.pick(earlier, replay)
            event, accepted = sent
            duplicates = int(accepted)
            SEEN["usage events delivered again"] += 1
            again = not accepted and self.model.report_usage(
                lease_id=event["subject"], at=datetime.fromisoformat(event["time"]), seconds=event["data"]["quantity"],
                now=self.clock,
            )  # fmt: skip
            sent[1] = accepted or again  # an event refused before is a new event when it comes again
            batch.append((event, again))
        for _, accepted in batch:
            SEEN["usage events accepted" if accepted else "usage events refused (over the lease) or duplicates"] += 1
        with self.at_clock():
            result = usage_events_ingest(
                provider_id=organization.pk, events=[event for event, _ in batch], now=self.clock
            )
            assert result.accepted == sum(accepted for _, accepted in batch), (
                result.errors,
                [
                    (event["id"], event["subject"][:8], event["time"], event["data"]["quantity"], ok)
                    for event, ok in batch
                ],
            )
            assert result.duplicates == duplicates
            usage_rollup_buckets(
                buckets=[(lease_id, datetime.fromtimestamp(hour * 3600, UTC)) for lease_id, hour in result.buckets]
            )
        self.sent[provider].extend([event, accepted] for event, accepted in batch[: len(usage)])

    @rule(
        pool=st.integers(0, 3),
        base=st.sampled_from([Decimal("9.99"), Decimal("12"), Decimal("20"), Decimal("33.33")]),
        factors=st.sampled_from(FACTORS),
        hours_ahead=st.integers(1, 12),
    )
    def price_changes(self, pool: int, base: Decimal, factors: dict[str, Decimal], hours_ahead: int) -> None:
        record = self.world.pools[str(self.world.leases[pool].pool_id)]
        bands = set(hour_bands(record.hub.tariff))
        given = {band: factor for band, factor in factors.items() if band in bands}
        starts = self.clock.replace(minute=0) + timedelta(hours=hours_ahead)
        _, refusal = self.predict(
            lambda: self.model.change_price(pool_id=str(record.pk), version=m.Version(starts, base, given))
        )
        with self.at_clock():
            self.expect(
                refusal,
                lambda: price_plan_create(
                    pool=record, by="test", price_per_card_hour=base, time_of_use=given, effective_from=starts
                ),
            )

    # --- invoices -------------------------------------------------------------------------

    @precondition(lambda self: self.model.invoices)
    @rule(index=st.integers(0, 1000))
    def an_invoice_is_finalized(self, index: int) -> None:
        key = self.pick(list(self.model.invoices), index)
        was = self.model.invoices[key].status
        invoice, refusal = self.predict(lambda: self.model.finalize(key=key, now=self.clock))
        with self.at_clock():
            self.expect(refusal, lambda: invoice_finalize(invoice_id=self.invoice(key).pk, now=self.clock))
        if invoice and was == "draft":
            self.saw_finalized(invoice)

    def saw_finalized(self, invoice: m.Invoice) -> None:
        SEEN["invoices finalized"] += 1
        SEEN["invoices paid partly by vouchers"] += invoice.voucher_credit > 0
        SEEN["invoices paid wholly by vouchers"] += invoice.subtotal > 0 and invoice.amount_due == 0
        SEEN["invoices with adjustments for late usage"] += any(line.kind == "adjustment" for line in invoice.lines)
        versions = {(line.lease, line.version) for line in invoice.lines}
        SEEN["invoices with two price versions of a lease"] += len(versions) > len({lease for lease, _ in versions})

    def scheduled_jobs_run(self) -> None:
        closed_before = m.month_of(self.clock - timedelta(hours=django_settings.BILLING_FINALIZE_GRACE_HOURS))[0]
        due = sorted(
            key for key, i in self.model.invoices.items() if i.status == "draft" and i.period_end <= closed_before
        )
        with self.at_clock():
            invoice_ids = invoices_due_for_finalizing(now=self.clock)
            assert sorted(self.invoice(key).pk for key in due) == sorted(invoice_ids)
            # One batch, as the settlement task finalizes them: oldest first, and of a buyer's
            # invoices the oldest bills its late usage.
            ids = {key: self.invoice(key).pk for key in due}
            took_late: set[str] = set()
            for key in sorted(due, key=lambda key: (key[1], str(ids[key]))):
                self.saw_finalized(self.model.finalize(key=key, now=self.clock, takes_late=key[0] not in took_late))
                took_late.add(key[0])
            assert invoices_finalize(invoice_ids=list(ids.values()), now=self.clock) == len(due)
            self.model.expire(now=self.clock)
            SEEN["vouchers expired"] += vouchers_expire(now=self.clock)

    @precondition(lambda self: self.model.invoices)
    @rule(index=st.integers(0, 1000))
    def an_operator_voids_an_invoice(self, index: int) -> None:
        key = self.pick(list(self.model.invoices), index)
        paid = self.model.invoices[key].amount_paid
        _, refusal = self.predict(lambda: self.model.void(key=key, now=self.clock))
        if refusal is None:
            SEEN["invoices voided" + (" after a payment" if paid else "")] += 1
        with self.at_clock():
            self.expect(refusal, lambda: invoice_void(invoice_id=self.invoice(key).pk, by="operator", now=self.clock))

    @precondition(lambda self: any(i.status == "void" for i in self.model.invoices.values()))
    @rule(index=st.integers(0, 1000))
    def a_voided_invoice_is_refunded(self, index: int) -> None:
        key = self.pick([k for k, i in self.model.invoices.items() if i.status == "void"], index)
        self.model.refund(key=key)
        SEEN["refunds of voided invoices"] += 1
        with self.at_clock():
            invoice_refund(invoice_id=self.invoice(key).pk)

    # --- payments -------------------------------------------------------------------------

    @rule(buyer=st.integers(0, 1), card=st.sampled_from(sorted(CARDS)))
    def a_buyer_sets_a_card(self, buyer: int, card: str) -> None:
        organization = self.world.buyers[buyer]
        with self.at_clock():
            refusal = m.Refused("card_declined") if card == "refused" else None
            method = new_card(CARDS[card])
            self.expect(refusal, lambda: payment_method_set(organization=organization, payment_method=method))
        if refusal is None:
            self.model.cards[str(organization.pk)] = card

    def collectible(self) -> list[tuple[str, datetime]]:
        return [k for k, i in self.model.invoices.items() if i.status in ("finalized", "uncollectible")]

    @precondition(lambda self: self.collectible())
    @rule(index=st.integers(0, 1000))
    def an_invoice_is_collected_by_card(self, index: int) -> None:
        key = self.pick(self.collectible(), index)
        outcome = self.model.collect(key=key)
        with self.at_clock():
            attempt = invoice_collect(invoice_id=self.invoice(key).pk)
        assert (attempt.status if attempt else None) == outcome
        if attempt:
            self.attempts.append(attempt)
            SEEN[f"card collections {attempt.status}"] += 1
            SEEN["invoices made uncollectible by dunning"] += self.model.invoices[key].status == "uncollectible"

    @precondition(lambda self: self.collectible())
    @rule(index=st.integers(0, 1000), again=st.integers(0, 1000))
    def the_charge_is_told_by_webhook(self, index: int, again: int) -> None:
        """Stripe charges (or declines) the card but its answer is lost on the way back; the attempt
        stays pending and Stripe's webhook decides it. Then Stripe delivers the opposite outcome of
        an attempt already decided, which changes nothing."""
        key = self.pick(self.collectible(), index)
        outcome = self.model.collect(key=key)
        client = stripe_client()
        confirm = client.v1.payment_intents.confirm

        def answer_lost(*args: Any, **kwargs: Any) -> None:
            with contextlib.suppress(stripe_library.CardError):
                confirm(*args, **kwargs)
            raise stripe_library.APIConnectionError("connection lost after Stripe answered")

        client.v1.payment_intents.confirm = answer_lost  # type: ignore[method-assign]
        try:
            with self.at_clock():
                invoice = self.invoice(key)
                if outcome is not None and self.model.cards.get(key[0]):
                    with pytest.raises(stripe_library.APIConnectionError):
                        invoice_collect(invoice_id=invoice.pk)
                    attempt = invoice.attempts.get(status=PaymentAttempt.Status.PENDING)
                    self.deliver(attempt, outcome == "succeeded")
                    SEEN[f"payments {outcome} by webhook"] += 1
                else:  # nothing to charge, or no card: decided without Stripe
                    invoice_collect(invoice_id=invoice.pk)
                attempt = invoice.attempts.order_by("number").last()  # type: ignore[assignment]
                assert (attempt.status if outcome else None) == outcome
                if outcome:
                    self.attempts.append(attempt)
                if self.attempts:
                    decided = self.pick(self.attempts, again)
                    decided.refresh_from_db()
                    self.deliver(decided, decided.status == PaymentAttempt.Status.FAILED)
                    SEEN["webhooks delivered again with the opposite outcome"] += 1
        finally:
            del client.v1.payment_intents.confirm

    def deliver(self, attempt: PaymentAttempt, succeeded: bool) -> None:
        kind = "succeeded" if succeeded else "payment_failed"
        event = {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": f"payment_intent.{kind}",
            "data": {
                "object": {
                    "id": attempt.payment_intent_id,
                    "object": "payment_intent",
                    "metadata": {"attempt": str(attempt.pk)},
                    "last_payment_error": None if succeeded else {"code": "card_declined", "message": "declined"},
                }
            },
        }
        payload = json.dumps(event).encode()
        timestamp = int(time.time())
        secret = django_settings.STRIPE_WEBHOOK_SECRET
        signature = stripe_library.WebhookSignature._compute_signature(f"{timestamp}.{payload.decode()}", secret)
        record = webhook_receive(payload=payload, signature=f"t={timestamp},v1={signature}")
        webhook_process(event_id=record.pk)

    @precondition(lambda self: self.model.invoices)
    @rule(index=st.integers(0, 1000), any_invoice=st.booleans())
    def the_buyer_pays_now_with_a_good_card(self, index: int, any_invoice: bool) -> None:
        key = self.pick(
            self.collectible() if self.collectible() and not any_invoice else list(self.model.invoices), index
        )
        outcome, refusal = self.predict(lambda: self.model.pay_now(key=key))
        with self.at_clock():
            method = new_card(CARDS["good"])
            attempt = self.expect(refusal, lambda: invoice_pay(invoice=self.invoice(key), payment_method=method))
        if refusal is None:
            assert (attempt.status if attempt else None) == outcome
            if attempt:
                self.attempts.append(attempt)
                SEEN["invoices paid now by the buyer"] += 1

    @precondition(lambda self: self.collectible())
    @rule(index=st.integers(0, 1000), part=st.sampled_from([Decimal("0.3"), Decimal("1"), Decimal("1.5")]))
    def an_operator_records_a_bank_transfer(self, index: int, part: Decimal) -> None:
        key = self.pick(self.collectible(), index)
        invoice = self.model.invoices[key]
        amount = max(1, int((invoice.amount_due - invoice.amount_paid) * part))
        _, refusal = self.predict(lambda: self.model.bank_transfer(key=key, amount=amount))
        with self.at_clock():
            self.expect(refusal, lambda: bank_transfer_record(invoice=self.invoice(key), amount=amount, by="operator"))

    # --- vouchers -------------------------------------------------------------------------

    @rule(
        program=st.integers(0, 1),
        buyer=st.integers(0, 1),
        face_value=st.integers(100, 80_000),
        days=st.one_of(st.none(), st.integers(1, 150)),
    )
    def an_issuer_grants_a_voucher(self, program: int, buyer: int, face_value: int, days: int | None) -> None:
        program_id = self.pick(list(self.model.programs), program)
        organization = self.world.buyers[buyer]
        self.clock += timedelta(minutes=1)  # vouchers granted at one instant would be ordered by their random codes
        valid_until = None if days is None else self.clock + timedelta(days=days)
        validity, refusal = self.predict(
            lambda: self.model.issue(
                program_id=program_id,
                buyer=str(organization.pk),
                face_value=face_value,
                valid_until=valid_until,
                now=self.clock,
            )
        )
        request = VoucherRequest(organization=organization, face_value=face_value, valid_until=valid_until)
        issued = self.expect(
            refusal,
            lambda: vouchers_issue(
                program=VoucherProgram.objects.get(pk=program_id), requests=[request], by="issuer", now=self.clock
            ),
        )
        if refusal is None:
            SEEN["vouchers issued"] += 1
            (voucher,) = issued
            self.model.vouchers[str(voucher.pk)] = m.Voucher(
                str(voucher.pk),
                voucher.code,
                self.model.programs[program_id],
                str(organization.pk),
                face_value,
                *validity,
                remaining=face_value,
            )

    @precondition(lambda self: self.model.vouchers)
    @rule(index=st.integers(0, 1000))
    def an_issuer_revokes_a_voucher(self, index: int) -> None:
        voucher_id = self.pick(list(self.model.vouchers), index)
        _, refusal = self.predict(lambda: self.model.revoke(voucher_id=voucher_id))
        self.expect(
            refusal,
            lambda: voucher_revoke(voucher=Voucher.objects.get(pk=voucher_id), by="issuer", now=self.clock),
        )

    # --- the books ------------------------------------------------------------------------

    @invariant()
    def the_books_agree_with_the_model(self) -> None:
        SEEN["steps checked"] += 1
        model = self.model
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(sum(amount), 0) FROM billing_leg")
            assert cursor.fetchone()[0] == 0, "the ledger does not sum to zero"
        ledger = {
            (purpose, str(organization) if organization else None): int(total)
            for purpose, organization, total in Leg.objects.values_list("account__purpose", "account__organization_id")
            .annotate(total=Sum("amount"))
            .order_by()
        }
        expected = {key: amount for key, amount in model.ledger.items() if amount}
        assert {key: amount for key, amount in ledger.items() if amount} == expected

        invoices = {
            (str(buyer), start): (status, subtotal, credit, due, paid)
            for buyer, start, status, subtotal, credit, due, paid in Invoice.objects.values_list(
                "buyer_id", "period_start", "status", "subtotal", "voucher_credit", "amount_due", "amount_paid"
            )
        }
        assert invoices == {
            key: (i.status, i.subtotal, i.voucher_credit, i.amount_due, i.amount_paid)
            for key, i in model.invoices.items()
        }
        vouchers = {
            str(pk): (status, remaining, released)
            for pk, status, remaining, released in Voucher.objects.values_list("pk", "status", "remaining", "released")
        }
        assert vouchers == {pk: (v.status, v.remaining, v.released) for pk, v in model.vouchers.items()}
        programs = {str(p.pk): p.budget_left for p in VoucherProgram.objects.all()}
        assert programs == {pk: p.budget_left for pk, p in model.programs.items()}
        caps = {
            (str(buyer), str(issuer), year): redeemed
            for buyer, issuer, year, redeemed in YearlyCapUsage.objects.values_list(
                "buyer", "issuer", "year", "redeemed"
            )
            if redeemed
        }
        assert caps == {key: amount for key, amount in model.cap_used.items() if amount}
        statements = {
            (str(provider), start): net
            for provider, start, net in ProviderStatement.objects.values_list("provider_id", "period_start", "net")
            if net
        }
        assert statements == {key: net for key, net in model.statements.items() if net}
        blocked = {
            str(pk) for pk in Organization.objects.exclude(orders_blocked_reason="").values_list("pk", flat=True)
        }
        assert blocked == model.blocked
        assert reconcile() == []


def test_money_state_machine(stripe: str) -> None:
    MoneyMachine.world = build_world()
    SEEN.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        MoneyMachine,
        settings=settings(
            max_examples=SEQUENCES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    SEEN["seconds"] = round(time.monotonic() - started)
    print("\nmoney state machine:", ", ".join(f"{label} {count}" for label, count in sorted(SEEN.items())))  # noqa: T201
