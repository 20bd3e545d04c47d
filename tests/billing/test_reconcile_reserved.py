"""``reconcile`` proves reserved bookings complete, not only balanced: every finalized month of a
reserved lease carries ``reserved`` lines for exactly its booked card-hours in that month, and every
booking cancelled before its start one ``cancel_fee`` line of the right card-hours and amount in the
month it was cancelled. The tampering below leaves the ledger balanced where it can: only this
check sees it."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db.models import F

from billing.models import Invoice, InvoiceLine
from billing.services.invoices import invoice_finalize, invoice_void, invoices_due_for_finalizing
from billing.services.reconcile import Difference, reconcile
from marketplace.models import Lease
from marketplace.services import order_cancel
from tests.billing.test_reserved import APRIL_5, BOOKED, MAY_6, H, finalize, order, reserved_pool

pytestmark = pytest.mark.django_db

MONTH_END = datetime(2026, 3, 31, 16, tzinfo=UTC)  # April starts in Shanghai
RESERVED_CHECKS = ("reserved card-hours", "cancellation fee")


def reserved_differences() -> list[Difference]:
    return [difference for difference in reconcile() if difference.check in RESERVED_CHECKS]


def cancelled_booking(buyer: Any, provider: Any) -> Lease:
    """8 cards for 10 hours from five hours on, cancelled an hour after booking: a fee of 120.00."""
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED, start=BOOKED + 5 * H)
    with time_machine.travel(BOOKED + H, tick=False):
        order_cancel(order=lease.order, by="buyer")
    return lease


def test_a_booking_across_a_month_end_reconciles_clean_with_one_month_finalized_and_with_both(buyer, provider) -> None:
    pool = reserved_pool(provider, at=MONTH_END - 5 * H)
    order(buyer, pool, at=MONTH_END - 4 * H, hours=8)  # 4 hours in March, 4 in April

    march = finalize(buyer, MONTH_END - H, APRIL_5)
    assert reconcile() == []  # April is still open: nothing is owed yet
    april = finalize(buyer, MONTH_END + H, MAY_6)

    assert sum(line.quantity for line in march.lines.all()) == sum(line.quantity for line in april.lines.all()) == 32
    assert reconcile() == []


def test_a_booked_month_billed_at_fewer_card_hours_is_reported_naming_the_lease_and_month(buyer, provider) -> None:
    pool = reserved_pool(provider, at=MONTH_END - 5 * H)
    lease = order(buyer, pool, at=MONTH_END - 4 * H, hours=8)
    finalize(buyer, MONTH_END - H, APRIL_5)
    april = finalize(buyer, MONTH_END + H, MAY_6)

    # The amount stays (the ledger and the invoice's subtotal agree): only the card-hours are short.
    first = april.lines.order_by("band").first()
    InvoiceLine.objects.filter(pk=first.pk).update(quantity=F("quantity") - 8)  # type: ignore[union-attr]

    assert reserved_differences() == [
        Difference(
            "reserved card-hours",
            f"lease {lease.pk} 2026-04 (invoice {april.number})",
            Decimal(24),
            Decimal(32),
            ("on reserved lines", "booked"),
        )
    ]


def test_a_finalized_month_missing_its_reserved_line_is_reported(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED)
    invoice = finalize(buyer, BOOKED, APRIL_5)

    InvoiceLine.objects.filter(invoice=invoice, kind=InvoiceLine.Kind.RESERVED).delete()

    assert reserved_differences() == [
        Difference(
            "reserved card-hours",
            f"lease {lease.pk} 2026-03 (invoice {invoice.number})",
            Decimal(0),
            Decimal(80),
            ("on reserved lines", "booked"),
        )
    ]


def test_a_reserved_line_of_hours_not_booked_that_month_is_reported(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED)
    march = finalize(buyer, BOOKED, APRIL_5)
    april = finalize(buyer, APRIL_5, MAY_6)  # nothing booked in April: no lines
    for line in march.lines.all():  # the same lines billed again in April
        line.pk, line.invoice = None, april
        line.save()

    assert reserved_differences() == [
        Difference(
            "reserved card-hours",
            f"lease {lease.pk} 2026-04 (invoice {april.number})",
            Decimal(80),
            Decimal(0),
            ("on reserved lines", "booked"),
        )
    ]


def test_a_cancelled_booking_billed_its_fee_reconciles_clean(buyer, provider) -> None:
    cancelled_booking(buyer, provider)

    finalize(buyer, BOOKED, APRIL_5)

    assert reconcile() == []


def test_a_missing_cancellation_fee_is_reported(buyer, provider) -> None:
    lease = cancelled_booking(buyer, provider)
    invoice = finalize(buyer, BOOKED, APRIL_5)

    InvoiceLine.objects.filter(invoice=invoice, kind=InvoiceLine.Kind.CANCEL_FEE).delete()

    assert reserved_differences() == [
        Difference(
            "cancellation fee",
            f"lease {lease.pk} cancelled 2026-03 (invoice {invoice.number}): 0 lines",
            0,
            12000,
            ("on cancel_fee lines", "the fee of its booking"),
        )
    ]


def test_a_cancellation_fee_of_the_wrong_amount_or_card_hours_is_reported(buyer, provider) -> None:
    lease = cancelled_booking(buyer, provider)
    invoice = finalize(buyer, BOOKED, APRIL_5)
    fee = invoice.lines.filter(kind=InvoiceLine.Kind.CANCEL_FEE)

    fee.update(amount=11999)
    assert [str(d) for d in reserved_differences()] == [
        f"cancellation fee lease {lease.pk} cancelled 2026-03 (invoice {invoice.number}): 1 line:"
        " on cancel_fee lines 11999, the fee of its booking 12000"
    ]
    fee.update(amount=12000, quantity=Decimal(8))  # the fee right, the card-hours not
    assert [str(d) for d in reserved_differences()] == [
        f"cancellation fee lease {lease.pk} cancelled 2026-03 (invoice {invoice.number}) card-hours:"
        " on cancel_fee lines 8, booked 80"
    ]


def test_a_cancellation_fee_billed_twice_is_reported(buyer, provider) -> None:
    lease = cancelled_booking(buyer, provider)
    invoice = finalize(buyer, BOOKED, APRIL_5)
    line = invoice.lines.get(kind=InvoiceLine.Kind.CANCEL_FEE)

    line.pk = None
    line.save()

    (difference,) = reserved_differences()
    assert difference.subject == f"lease {lease.pk} cancelled 2026-03 (invoice {invoice.number}): 2 lines"
    assert (difference.ledger, difference.expected) == (24000, 12000)


def test_a_cancelled_booking_billed_as_booked_instead_of_its_fee_is_reported(buyer, provider) -> None:
    lease = cancelled_booking(buyer, provider)
    invoice = finalize(buyer, BOOKED, APRIL_5)

    invoice.lines.filter(kind=InvoiceLine.Kind.CANCEL_FEE).update(kind=InvoiceLine.Kind.RESERVED)

    assert sorted(d.check for d in reserved_differences()) == ["cancellation fee", "reserved card-hours"]
    assert all(str(lease.pk) in d.subject for d in reserved_differences())


def test_a_voided_reserved_month_keeps_its_lines_and_is_not_billed_again(buyer, provider) -> None:
    # A void reverses the month's money but keeps its invoice and lines; one invoice per buyer and
    # month, so month end never bills the booking again: its lines stay the month's record.
    pool = reserved_pool(provider, at=BOOKED)
    order(buyer, pool, at=BOOKED)
    invoice = finalize(buyer, BOOKED, APRIL_5)
    billed = list(InvoiceLine.objects.filter(kind=InvoiceLine.Kind.RESERVED).order_by("pk"))

    invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5 + H)
    with time_machine.travel(APRIL_5 + 2 * H, tick=False):
        due = invoices_due_for_finalizing(now=APRIL_5 + 2 * H)
        again = invoice_finalize(invoice_id=invoice.pk, now=APRIL_5 + 2 * H)

    assert invoice.pk not in due and again.status == Invoice.Status.VOID
    assert list(InvoiceLine.objects.filter(kind=InvoiceLine.Kind.RESERVED).order_by("pk")) == billed
    assert reconcile() == []


def test_a_voided_reserved_month_missing_its_lines_is_still_reported(buyer, provider) -> None:
    pool = reserved_pool(provider, at=BOOKED)
    lease = order(buyer, pool, at=BOOKED)
    invoice = finalize(buyer, BOOKED, APRIL_5)
    invoice_void(invoice_id=invoice.pk, by="operator", now=APRIL_5 + H)

    first = invoice.lines.order_by("band").first()
    InvoiceLine.objects.filter(pk=first.pk).update(quantity=F("quantity") - 1)  # type: ignore[union-attr]

    assert [d.subject for d in reserved_differences()] == [f"lease {lease.pk} 2026-03 (invoice {invoice.number})"]
