"""What a token order's price lock is: a batch job is booked to its deadline and keeps the price it
was quoted; a pay-as-you-go token account books no hours, so a rise reaches it after its notice."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from billing.services.invoices import invoice_finalize
from billing.services.reconcile import reconcile
from marketplace.models import Lease
from marketplace.token_dispatch import BATCH, TokenRequest
from marketplace.token_services import token_order_place
from pools.endpoints import endpoint_reprice
from pools.models import PricePlan
from tests.billing.test_invoices import APRIL_5, march_invoice
from tests.marketplace.test_tokens import (
    MODEL,
    ORDERED,
    endpoint,
    ingest,
    lease_start_if_due,
    token_lease,
    tokens_event,
)

pytestmark = pytest.mark.django_db

__all__ = ["token_lease"]  # the fixture


def rise(lease: Lease, *, at: Any) -> PricePlan:
    """Its provider doubles the endpoint's prices at ``at``."""
    with time_machine.travel(at, tick=False):
        return endpoint_reprice(
            endpoint=lease.endpoint, input_price=Decimal("4.00"), output_price=Decimal("16.00"), by="provider"
        )


def versions_billed(lease: Lease) -> dict[Any, int]:
    """Each hour of the lease's output tokens and the price version it was rated with."""
    return {
        rollup.hour: rollup.price_plan.version
        for rollup in lease.usage_rollups.filter(metric="output_tokens").select_related("price_plan")
    }


def test_a_rise_reaches_a_token_account_after_its_notice_not_a_year_later(token_lease, settings) -> None:
    # given a pay-as-you-go account opened at ORDERED (booked for a year), and a rise an hour later
    opened_on = token_lease.price_plan.version
    made = rise(token_lease, at=ORDERED + timedelta(hours=1))
    assert made.running_from == ORDERED + timedelta(hours=1 + settings.PRICE_RISE_NOTICE_HOURS)

    # when it uses tokens within the rise's notice and after it
    in_notice = ORDERED + timedelta(hours=2, minutes=5)
    after = made.running_from + timedelta(minutes=5)  # in the hour it reaches running leases: reconcile checks it
    for name, when in (("in-notice", in_notice), ("after", after)):
        ingest(token_lease, [tokens_event(token_lease, name, when)], when + timedelta(minutes=5))

    # then the notice holds its price, and after it the account pays the rise, as running leases do
    hour = timedelta(minutes=5)
    assert versions_billed(token_lease) == {in_notice - hour: opened_on, after - hour: made.version}
    # its lock: no year, only until the version it was opened on reaches running leases (the endpoint's
    # first token prices were new a minute before it opened, so a rise with a notice of their own)
    locked_until = Lease.objects.get(pk=token_lease.pk).price_locked_until
    assert locked_until == token_lease.price_plan.running_from < made.running_from
    invoice = invoice_finalize(invoice_id=march_invoice(token_lease.buyer).pk, now=APRIL_5)
    rates = sorted(line.rate for line in invoice.lines.filter(metric="output_tokens"))
    assert rates[1] == 2 * rates[0]  # the same band (peak), before and after the rise
    assert reconcile() == []


def test_a_batch_token_job_keeps_its_quoted_price_to_its_deadline(buyer, provider, settings) -> None:
    settings.PRICE_RISE_NOTICE_HOURS = 1
    with time_machine.travel(ORDERED - timedelta(minutes=1), tick=False):
        endpoint(provider)
    deadline = ORDERED + timedelta(hours=20)
    job = TokenRequest(model=MODEL, input_tokens=10**7, output_tokens=10**7, workload=BATCH, deadline=deadline)
    with time_machine.travel(ORDERED, tick=False):  # waits for the night's valley hours
        lease = token_order_place(buyer=buyer, request=job, by="test").leases.get()
    quoted = lease.price_plan.version
    made = rise(lease, at=ORDERED + timedelta(hours=1))  # reaches running leases long before the job starts
    assert made.running_from < lease.start_at

    with time_machine.travel(lease.start_at, tick=False):
        lease_start_if_due(lease)
    when = lease.start_at + timedelta(minutes=10)
    ingest(lease, [tokens_event(lease, "job", when)], when + timedelta(minutes=5))

    assert set(versions_billed(lease).values()) == {quoted}
    assert Lease.objects.get(pk=lease.pk).price_locked_until == deadline
    assert reconcile() == []
