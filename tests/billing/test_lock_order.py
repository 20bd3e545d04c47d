"""The lock order of the money paths, under real concurrency (PostgreSQL, a connection per thread).

A row that references an organization (a grant, a bank movement, a ledger account) takes a
``FOR KEY SHARE`` lock on the organization's row when its foreign key is checked: at commit, since
Django's foreign keys are deferred. So a path that locks the buyer's bank and then writes such a
row takes the bank, then (at commit) the buyer. A void that locked the invoice and the buyer's row
``FOR UPDATE`` (``select_related`` without ``of=``) and then the bank took them the other way round,
and the two deadlocked."""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, transaction

from billing.bank_credits import banks_lock
from billing.models import CreditGrant, Invoice, TopUp
from billing.services.bank.grants import grant_create
from billing.services.bank.top_ups import top_up_succeeded
from billing.services.invoices import invoice_finalize, invoice_for_period, invoice_void, invoices_finalize
from billing.services.reconcile import reconcile
from tests.billing.factories import credit, usage
from tests.billing.test_bank_invoices import march_usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice
from tests.billing.test_reserved import MAY_6
from tests.threads import run_concurrently
from tests.vouchers.factories import program_factory, voucher_factory

pytestmark = pytest.mark.django_db(transaction=True)


def waiting_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        (waiting,) = cursor.fetchone()
    return bool(waiting)


def while_a_grant_holds_the_bank(buyer: Any, second: Callable[[], object]) -> list[str]:
    """An operator grants ``buyer`` credit and, while its transaction holds the buyer's bank, ``second``
    runs on another connection; the grant commits once ``second`` waits for a lock (or after 5 s).
    Returns the errors either raised."""
    granted, second_pid, seen_waiting = threading.Event(), [], []
    errors: list[BaseException] = []

    def operator_grants() -> None:  # the bank first, then (at commit) the buyer's row, for the grant's key
        try:
            with transaction.atomic():
                grant_create(buyer=buyer, source=CreditGrant.Source.PROMOTION, amount=5_000, by="operator")
                granted.set()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not seen_waiting:
                    if second_pid and waiting_for_a_lock(second_pid[0]):
                        seen_waiting.append(True)
                    time.sleep(0.05)
        except BaseException as error:  # noqa: BLE001  asserted below
            errors.append(error)
        finally:
            granted.set()

    def meanwhile() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            second_pid.append(cursor.fetchone()[0])
        granted.wait(10)
        try:
            second()
        except BaseException as error:  # noqa: BLE001  asserted below
            errors.append(error)

    run_concurrently([operator_grants, meanwhile])
    assert seen_waiting, "the second path never waited for the grant: this test proves nothing"
    return [str(error) for error in errors]


def test_an_operators_grant_and_a_void_of_the_same_buyer_take_turns_instead_of_deadlocking(buyer, provider) -> None:
    # given an invoice the buyer's bank paid a part of
    march_usage(buyer, provider)
    credit(buyer, 30_000, at=SETUP)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    assert invoice.bank_credit == 30_000

    # when an operator grants the buyer credit while another voids its invoice (the void gives credit back)
    errors = while_a_grant_holds_the_bank(
        buyer, lambda: invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5)
    )

    # then both land, one after the other: no "deadlock detected"
    assert errors == []
    assert Invoice.objects.get(pk=invoice.pk).status == Invoice.Status.VOID
    grants: Any = CreditGrant.objects.filter(buyer=buyer).order_by("amount").values_list("amount", "remaining")
    assert list(grants) == [(5_000, 5_000), (30_000, 30_000)]
    assert reconcile() == []


def test_an_operators_grant_and_a_top_up_of_the_same_buyer_take_turns_instead_of_deadlocking(buyer) -> None:
    # given a top-up Stripe is about to confirm
    top_up = TopUp.objects.create(buyer=buyer, amount=20_000, payment_intent_id="pi_lock_order")

    # when its webhook grants the credit while an operator's grant holds the bank
    errors = while_a_grant_holds_the_bank(
        buyer, lambda: top_up_succeeded(top_up_id=top_up.pk, amount=20_000, currency="CNY")
    )

    # then both land, one after the other
    assert errors == []
    grants: Any = CreditGrant.objects.filter(buyer=buyer).order_by("amount").values_list("source", "amount")
    assert list(grants) == [("promotion", 5_000), ("top_up", 20_000)]
    assert reconcile() == []


def test_a_void_and_month_end_of_the_same_buyer_take_turns_instead_of_deadlocking(buyer, provider, issuer) -> None:
    # given a March invoice its voucher and bank paid parts of, and April's draft due at month end
    program = program_factory(issuer, coverage_share="0.2", valid_until=datetime(2027, 1, 1, tzinfo=UTC))
    voucher_factory(program, buyer, face_value=10_000_000)
    march_usage(buyer, provider)
    credit(buyer, 30_000, at=SETUP)
    march = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    assert march.voucher_credit > 0 and march.bank_credit == 30_000
    credit(buyer, 30_000, at=APRIL_5)
    usage(march.lines.first().lease, datetime(2026, 4, 10, 4, tzinfo=UTC), seconds=8 * 3600)  # type: ignore[union-attr]
    april = invoice_for_period(buyer=buyer, at=datetime(2026, 4, 10, 4, tzinfo=UTC))
    started, void_pid, seen_waiting = threading.Event(), [], []
    errors: list[BaseException] = []

    def month_end() -> None:  # finalization locks its buyers' banks first: here, before the void starts
        try:
            with transaction.atomic():
                banks_lock(buyer_ids=[buyer.pk])
                started.set()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not seen_waiting:
                    if void_pid and waiting_for_a_lock(void_pid[0]):
                        seen_waiting.append(True)
                    time.sleep(0.05)
                invoices_finalize(invoice_ids=[april.pk], now=MAY_6)
        except BaseException as error:  # noqa: BLE001  asserted below
            errors.append(error)
        finally:
            started.set()

    def operator_voids() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            void_pid.append(cursor.fetchone()[0])
        started.wait(10)
        try:
            invoice_void(invoice_id=march.pk, by="operator", now=MAY_6)
        except BaseException as error:  # noqa: BLE001  asserted below
            errors.append(error)

    # when an operator voids March while month end finalizes April
    run_concurrently([month_end, operator_voids])

    # then both land, one after the other
    assert seen_waiting, "the void never waited for month end: this test proves nothing"
    assert [str(error) for error in errors] == []
    assert Invoice.objects.get(pk=march.pk).status == Invoice.Status.VOID
    finalized = Invoice.objects.get(pk=april.pk)
    assert finalized.status != Invoice.Status.DRAFT and finalized.voucher_credit > 0
    assert reconcile() == []
