"""The compute bank under real concurrency: PostgreSQL, one connection per thread (at most 20 at once)."""

import logging
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from billing.models import Bank, BankMovement, CreditGrant, CreditHold, Invoice
from billing.services.bank.grants import bank_draw, bank_of
from billing.services.bank.state import bank_state, expected_cost
from billing.services.invoices import invoice_for_period, invoices_finalize
from billing.services.reconcile import reconcile
from core.exceptions import RuleViolation
from marketplace.dispatch import Requirements
from marketplace.models import Lease
from marketplace.services import lease_start, order_place
from tests.billing.factories import credit, leased, prepaid, usage
from tests.billing.test_invoices import APRIL_5, SETUP, shanghai
from tests.factories import BuyerFactory, ProviderFactory, pool_factory
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


class Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.won: list[int] = []
        self.refused: list[str] = []
        self.errors: list[BaseException] = []

    def run(self, job) -> None:  # type: ignore[no-untyped-def]
        try:
            result = job()
        except RuleViolation as exc:
            with self.lock:
                self.refused.append(exc.code)
        except BaseException as exc:  # noqa: BLE001  any other failure fails the test below
            with self.lock:
                self.errors.append(exc)
        else:
            with self.lock:
                self.won.append(result)


def test_200_concurrent_draws_worth_twice_the_balance_never_take_it_below_zero() -> None:
    # given 100.00 yuan in four grants, and 200 draws of 1.00 yuan on 20 threads (20 connections at once)
    buyer, now = BuyerFactory(), timezone.now()
    grants = [credit(buyer, 2_500, at=now, expires_at=now + timedelta(days=days)) for days in (1, 2, 3, 4)]
    outcomes = Outcomes()

    def draw(n: int):  # type: ignore[no-untyped-def]
        return lambda: outcomes.run(lambda: bank_draw(buyer=buyer, amount=100, reference=f"test:{n}"))

    # when
    run_concurrently([draw(n) for n in range(200)], threads=20)

    # then exactly the balance was drawn, the rest refused, and the books agree
    assert outcomes.errors == []
    assert (len(outcomes.won), sum(outcomes.won)) == (100, 10_000)
    assert outcomes.refused == ["insufficient_funds"] * 100
    assert [CreditGrant.objects.get(pk=grant.pk).remaining for grant in grants] == [0, 0, 0, 0]
    assert BankMovement.objects.filter(reason="draw").count() == 100
    assert reconcile() == []


def test_concurrent_partial_draws_take_exactly_the_balance() -> None:
    buyer, now = BuyerFactory(), timezone.now()
    credit(buyer, 9_999, at=now)
    credit(buyer, 1, source="top_up", at=now)
    outcomes = Outcomes()

    run_concurrently(
        [
            lambda: outcomes.run(lambda: bank_draw(buyer=buyer, amount=73, reference="test:partial", partial=True))
            for _ in range(200)
        ],
        threads=20,
    )

    assert outcomes.errors == []
    assert sum(outcomes.won) == 10_000
    assert bank_state(buyer_id=buyer.pk, at=timezone.now()).balance == 0
    assert reconcile() == []


def test_serialization_failures_are_retried_until_each_draw_lands_once(caplog) -> None:  # type: ignore[no-untyped-def]
    # given connections in REPEATABLE READ, where PostgreSQL aborts a transaction that would
    # lock a row another one changed since it began (SQLSTATE 40001)
    buyer, now = BuyerFactory(), timezone.now()
    grant = credit(buyer, 1_500, at=now)
    outcomes = Outcomes()

    def draw() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        outcomes.run(lambda: bank_draw(buyer=buyer, amount=100, reference="test:rr"))

    # when 30 draws of 1.00 run on 3 threads
    with caplog.at_level(logging.INFO, logger="core.locks"):
        run_concurrently([draw for _ in range(30)], threads=3)

    # then some were aborted and run again, and every draw landed once
    retried = [r for r in caplog.records if r.getMessage() == "transaction retried"]
    assert retried and {r.sqlstate for r in retried} == {"40001"}  # type: ignore[attr-defined]
    assert outcomes.errors == []
    assert (len(outcomes.won), len(outcomes.refused)) == (15, 15)
    assert CreditGrant.objects.get(pk=grant.pk).remaining == 0
    assert BankMovement.objects.filter(reason="draw").count() == 15
    assert reconcile() == []


def test_concurrent_lease_starts_hold_no_more_credit_than_the_bank_has() -> None:
    # given a prepaid buyer with credit for exactly three of ten scheduled leases
    buyer, provider = prepaid(BuyerFactory()), ProviderFactory()
    pool_factory(provider=provider, cards=100, price_per_card_hour=Decimal("10"))
    leases = [
        order_place(
            buyer=buyer,
            requirements=Requirements(cards=1, duration_hours=2, workload="training", gpu_model="H100-80G"),
        ).leases.get()
        for _ in range(10)
    ]
    start = max(lease.start_at for lease in leases) + timedelta(seconds=1)
    costs = sorted(expected_cost(lease=lease, at=start) for lease in leases)
    assert costs[0] > 0
    credit(buyer, sum(costs[:3]), at=start - timedelta(hours=1))
    outcomes = Outcomes()

    # when all ten start at once, on ten threads
    run_concurrently(
        [
            lambda lease=lease: outcomes.run(lambda: lease_start(lease_id=lease.pk, by="t", now=start))
            for lease in leases
        ]
    )

    # then three run, each holding its expected cost, and the others are refused for funds and still scheduled
    assert outcomes.errors == []
    running = Lease.objects.filter(pk__in=[lease.pk for lease in leases], status="running")
    assert running.count() == 3
    assert outcomes.refused == ["insufficient_funds"] * 7
    holds = CreditHold.objects.filter(buyer=buyer)
    assert sorted(holds.values_list("lease_id", flat=True)) == sorted(running.values_list("pk", flat=True))
    assert sum(holds.values_list("amount", flat=True)) <= sum(costs[:3])
    assert bank_state(buyer_id=buyer.pk, at=start).available >= 0


def test_a_batch_of_invoices_locks_its_buyers_banks_in_key_order_so_that_no_other_batch_deadlocks_with_it() -> None:
    # given two buyers whose banks were made in one order and whose invoices are paid in the other
    # (the buyer with the later bank has the older invoice), both paid by their banks

    provider, first, second = ProviderFactory(), BuyerFactory(), BuyerFactory()
    first_bank, second_bank = bank_of(first), bank_of(second)
    assert first_bank.pk < second_bank.pk
    for buyer, month in ((second, 2), (first, 3)):
        credit(buyer, 1_000_000, at=SETUP)
        usage(leased(buyer=buyer, provider=provider, at=SETUP), shanghai(24, 12, month=month))
    invoices = [invoice_for_period(buyer=second, at=shanghai(24, 12, month=2)).pk]
    invoices.append(invoice_for_period(buyer=first, at=shanghai(24, 12, month=3)).pk)
    holding_first, errors = threading.Event(), []

    def other_batch() -> None:  # takes the same banks in key order, slowly
        with transaction.atomic():
            Bank.objects.select_for_update().get(pk=first_bank.pk)
            holding_first.set()
            threading.Event().wait(1.5)
            Bank.objects.select_for_update().get(pk=second_bank.pk)

    def month_end() -> None:
        holding_first.wait(5)
        invoices_finalize(invoice_ids=invoices, now=APRIL_5)

    def guarded(job):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                job()
            except BaseException as exc:  # noqa: BLE001  a deadlock fails the test below
                errors.append(exc)

        return run

    # when month-end runs while another transaction takes the banks in key order
    run_concurrently([guarded(other_batch), guarded(month_end)])

    # then neither deadlocked, and both invoices were paid by their banks
    assert errors == []
    assert sorted(Invoice.objects.filter(pk__in=invoices).values_list("status", flat=True)) == ["paid", "paid"]
