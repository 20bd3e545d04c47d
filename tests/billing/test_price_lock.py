"""A booked lease keeps its price; rises reach running leases only after notice, decreases at
once (issue 17, points 1, 2 and 5)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from billing.services.reconcile import reconcile
from marketplace.models import Lease
from tests.billing.test_price_hours import EARLIER, HOUR, at, change_price, finalize_march, report, started

pytestmark = pytest.mark.django_db


@pytest.fixture
def reports_past_the_booking(settings: Any) -> None:
    """Agents may report up to an hour past the booked end (usage outside the price lock); a
    rise reaches running leases an hour after it is made."""
    settings.USAGE_TIME_GRACE_SECONDS = 3600
    settings.PRICE_RISE_NOTICE_HOURS = 1


def lines_by_rate(invoice: Any) -> dict[Decimal, Decimal]:
    """Card-hours billed at each rate (one line per band and rate)."""
    hours: dict[Decimal, Decimal] = {}
    for line in invoice.lines.all():
        if line.quantity:
            hours[line.rate] = hours.get(line.rate, Decimal(0)) + line.quantity
    return hours


def test_a_rise_mid_lease_leaves_the_booked_hours_at_the_locked_price(buyer, provider) -> None:
    lease = started(buyer, provider, registered=EARLIER)  # booked for 24 hours at 20
    report(lease, "before", at(10), 3600, now=at(11))
    change_price(lease, Decimal(100), now=at(30))
    report(lease, "after", at(45), 3600, now=at(46))
    report(lease, "next-day", HOUR + timedelta(hours=20), 3600, now=HOUR + timedelta(hours=21))

    invoice = finalize_march(buyer)

    assert lines_by_rate(invoice) == {Decimal(20): Decimal(3)}
    assert invoice.subtotal == 6000
    assert reconcile() == []


def test_a_rise_reaches_unbooked_usage_only_after_its_notice(buyer, provider, reports_past_the_booking) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)  # booked until HOUR
    change_price(lease, Decimal(100), now=at(-50))  # notice until at(10)
    report(lease, "booked", at(-30), 3600, now=at(-29))
    report(lease, "in-notice", at(5), 1800, now=at(6))
    report(lease, "after-notice", at(20), 7200, now=at(21))

    invoice = finalize_march(buyer)

    assert lines_by_rate(invoice) == {Decimal(20): Decimal("1.5"), Decimal(100): Decimal(2)}
    assert invoice.subtotal == 3000 + 20000
    assert reconcile() == []


def test_a_decrease_applies_at_once_outside_the_lock_and_not_inside(buyer, provider, reports_past_the_booking) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    change_price(lease, Decimal(10), now=at(-50))
    report(lease, "booked", at(-30), 3600, now=at(-29))
    report(lease, "unbooked", at(5), 3600, now=at(6))

    assert lines_by_rate(finalize_march(buyer)) == {Decimal(20): Decimal(1), Decimal(10): Decimal(1)}
    assert reconcile() == []


def test_a_lower_version_made_during_a_rises_notice_reaches_leases_with_that_notice_not_the_rise(
    buyer, provider, reports_past_the_booking
) -> None:
    lease = started(buyer, provider, registered=EARLIER, hours=1)
    change_price(lease, Decimal(100), now=at(-50))  # announced for at(10)
    change_price(lease, Decimal(30), now=at(-40))  # lower than the announced rise: reaches at(10) too
    report(lease, "in-notice", at(5), 3600, now=at(6))
    report(lease, "after-notice", at(20), 3600, now=at(21))

    assert lines_by_rate(finalize_march(buyer)) == {Decimal(20): Decimal(1), Decimal(30): Decimal(1)}
    assert reconcile() == []


def test_a_rise_across_month_end_bills_both_months_at_the_locked_price(buyer, provider) -> None:
    month_end = datetime(2026, 3, 31, 16, tzinfo=UTC)  # midnight in Shanghai: April begins
    lease = started(buyer, provider, registered=month_end - timedelta(hours=3))
    change_price(lease, Decimal(100), now=month_end - timedelta(hours=2))
    report(lease, "march", month_end - timedelta(minutes=30), 3600, now=month_end - timedelta(minutes=29))
    report(lease, "april", month_end + timedelta(minutes=30), 3600, now=month_end + timedelta(minutes=31))

    march = finalize_march(buyer)
    with time_machine.travel(datetime(2026, 5, 6, tzinfo=UTC), tick=False):
        from billing.services.invoices import invoice_finalize, invoice_for_period

        april = invoice_for_period(buyer=buyer, at=month_end + timedelta(hours=1))
        april = invoice_finalize(invoice_id=april.pk, now=datetime(2026, 5, 6, tzinfo=UTC))

    assert lines_by_rate(march) == {Decimal(20): Decimal(1)}
    assert lines_by_rate(april) == {Decimal(20): Decimal(1)}
    assert reconcile() == []


def test_a_lease_and_its_order_say_the_version_and_until_when_it_is_locked(buyer, provider, buyer_client) -> None:
    lease = started(buyer, provider, registered=EARLIER)
    change_price(lease, Decimal(100), now=at(30))

    with time_machine.travel(at(31), tick=False):
        body = buyer_client.get(f"/api/v1/leases/{lease.pk}/").json()
        order = buyer_client.get(f"/api/v1/orders/{lease.order_id}/").json()

    assert body["price_version"] == 1
    assert body["price_locked_until"] == order["price_locked_until"] == "2026-03-03T00:00:00Z"
    assert Lease.objects.get(pk=lease.pk).price_plan.version == 1
