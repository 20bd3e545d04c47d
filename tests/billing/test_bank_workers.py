"""The bank's beat task on a real Celery worker: a prepaid lease the credit cannot cover is warned, then ended, once."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import BankEvent, CreditHold
from billing.services.bank.state import expected_cost
from billing.tasks import bank_check
from config.celery import app
from marketplace.models import Lease
from marketplace.services import lease_start
from tests.billing.factories import credit, prepaid, usage
from tests.billing.test_bank_holds import booked, hour_of
from tests.factories import BuyerFactory, ProviderFactory

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def test_the_bank_check_on_a_worker_warns_then_ends_an_uncovered_lease_once(celery_workers, settings) -> None:
    # given a prepaid lease that used up its first hour, with no credit for the next
    settings.BANK_HOLD_HORIZON_HOURS = 1
    celery_workers.start(env={"BANK_HOLD_HORIZON_HOURS": "1", "BANK_LEASE_GRACE_SECONDS": "0"})
    buyer = prepaid(BuyerFactory())
    start = timezone.now() - timedelta(hours=1)
    lease = booked(buyer, ProviderFactory(), hours=6, at=start)
    credit(buyer, expected_cost(lease=lease, at=start), at=start - timedelta(minutes=1))
    lease_start(lease_id=lease.pk, by="test", now=start)
    usage(lease, hour_of(start), seconds=2 * 3600)
    assert app.amqp.router.route({}, "billing.tasks.bank_check")["queue"].name == "settle"

    # when beat sends the check, each time twice (a duplicate delivery), and once more at the end
    deadline = time.monotonic() + 60
    while Lease.objects.get(pk=lease.pk).status == "running":
        assert time.monotonic() < deadline, list(BankEvent.objects.values_list("kind", flat=True))
        bank_check.delay()
        bank_check.delay()
        time.sleep(1)
    bank_check.apply()

    # then the lease was warned and ended once, for insufficient funds, and its hold released
    lease.refresh_from_db()
    assert (lease.status, lease.end_reason, lease.ended_by) == ("preempted", "insufficient_funds", "compute bank")
    assert sorted(BankEvent.objects.filter(lease=lease).values_list("kind", flat=True)) == [
        "lease_ended",
        "lease_warned",
    ]
    assert CreditHold.objects.get(lease=lease).status == "released"
