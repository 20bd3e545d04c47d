"""A closed month of metered usage for some buyers, Celery beat played by the test, and the one
check every fault ends with: every invoice paid once, every usage event billed once, the books
reconcile."""

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
from django.db.models import F, Sum
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import (
    Invoice,
    InvoiceLine,
    JournalEntry,
    PaymentAttempt,
    UsageEvent,
    UsageRollup,
    UsageRollupDue,
)
from billing.periods import month_of
from billing.services.payments import payment_method_set
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from billing.tasks import invoices_finalize_due, payments_collect_due, usage_rollups_requeue
from marketplace.models import Lease
from marketplace.services import lease_start
from tests.billing.factories import leased
from tests.billing.test_payments import GOOD_CARD, card
from tests.conftest import REPO, database_url
from tests.factories import BuyerFactory, ProviderFactory

CARDS = 8
EVENT_SECONDS = CARDS * 900  # a quarter of an hour on every card: four events fill an hour


def usage_month() -> tuple[datetime, datetime]:
    """Two months ago: closed and past the grace for late usage whatever today's date."""
    last_month_start = month_of(month_of(timezone.now())[0] - timedelta(days=1))[0]
    return month_of(last_month_start - timedelta(days=1))


@dataclass
class Month:
    """Buyers with a running lease each in a closed month, their provider's agent, and the events sent."""

    leases: list[Lease]
    agent: APIClient
    sent: list[dict] = field(default_factory=list)

    def batch(self, day: int, hours: int = 2) -> list[dict]:
        """For every lease, ``hours`` full hours of card-seconds on day ``day`` of the month (4 events an hour)."""
        start = usage_month()[0] + timedelta(days=day)
        return [
            {
                "specversion": "1.0",
                "id": f"{lease.pk}:{day}:{hour}:{quarter}",
                "source": "agent://faults",
                "type": "compute.gpu_seconds",
                "subject": str(lease.pk),
                "time": (start + timedelta(hours=hour, minutes=15 * quarter + 1)).isoformat(),
                "data": {"quantity": EVENT_SECONDS, "cards": CARDS},
            }
            for lease in self.leases
            for hour in range(hours)
            for quarter in range(4)
        ]

    def send(self, events: list[dict]) -> dict:
        """The provider's agent posts a CloudEvents batch; every event must be accepted (or a replay)."""
        response = self.agent.generic(
            "POST", "/api/v1/usage-events/", orjson.dumps(events), content_type="application/json"
        )
        assert response.status_code < 300, response.content[:500]
        answer = response.json()
        assert answer["rejected"] == 0, answer["errors"][:3]
        self.sent.extend(events)
        return answer

    @property
    def events(self) -> int:
        return len({event["id"] for event in self.sent})


def a_closed_month(count: int, make_client: Callable[..., APIClient]) -> Month:
    """``count`` buyers with a card on file, each with an 8-card lease that ran through a closed month."""
    month_start, _ = usage_month()
    provider = ProviderFactory()
    leases = []
    for _ in range(count):
        buyer = BuyerFactory()
        lease = leased(buyer=buyer, provider=provider, at=month_start, hours=24 * 31)
        leases.append(lease_start(lease_id=lease.pk, by="test", now=month_start))
        payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    return Month(leases=leases, agent=make_client(provider))


class Beat:
    """Sends what Celery beat sends (the re-finding tasks), every ``every`` seconds, and waits.

    Settlement is sent only once no usage is waiting for its rollup: in production the grace
    for late usage (72 hours) lets every rollup land before a month's invoices are finalized.
    """

    def __init__(self, every: float = 2) -> None:
        self.every = every

    def until_settled(self, invoices: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        next_beat = time.monotonic()
        while time.monotonic() < deadline:
            if not UsageRollupDue.objects.exists() and Invoice.objects.filter(status="paid").count() == invoices:
                return
            if time.monotonic() >= next_beat:
                if UsageRollupDue.objects.exists():
                    usage_rollups_requeue.delay()
                else:
                    invoices_finalize_due.delay()
                    payments_collect_due.delay()
                next_beat = time.monotonic() + self.every
            time.sleep(0.2)
        statuses = Counter(Invoice.objects.values_list("status", flat=True))
        raise AssertionError(
            f"not settled in {timeout} s: invoices {dict(statuses)}, "
            f"{UsageRollupDue.objects.count()} buckets still due for a rollup"
        )

    def until_rolled_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while UsageRollupDue.objects.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{UsageRollupDue.objects.count()} buckets not rolled up in {timeout} s")
            usage_rollups_requeue.delay()
            time.sleep(self.every)


def assert_books_right(month: Month) -> None:
    """Every invoice paid once, every usage event billed once, ``reconcile`` clean."""
    # Every invoice paid once: one successful attempt of the amount due, one charge in Stripe.
    invoices = list(Invoice.objects.order_by("number"))
    assert {invoice.buyer_id for invoice in invoices} == {lease.buyer_id for lease in month.leases}
    assert [invoice.status for invoice in invoices] == ["paid"] * len(month.leases)
    year = invoices[0].number.split("-")[1]
    assert [invoice.number for invoice in invoices] == [f"CG-{year}-{n:06d}" for n in range(1, len(invoices) + 1)]
    assert sorted(PaymentAttempt.objects.values_list("invoice_id", "status", "amount")) == sorted(
        (invoice.pk, "succeeded", invoice.amount_due) for invoice in invoices
    ), "one attempt per invoice, and it succeeded"
    assert all(invoice.amount_paid == invoice.amount_due > 0 for invoice in invoices)
    charged = Counter(
        (intent.metadata["invoice"], intent.amount)
        for intent in stripe_client().v1.payment_intents.list(params={"limit": 100}).data
        if intent.status == "succeeded"
    )
    assert charged == Counter({(str(invoice.pk), invoice.amount_due): 1 for invoice in invoices})
    assert JournalEntry.objects.filter(kind="invoice.finalized").count() == len(invoices)
    assert JournalEntry.objects.filter(kind="payment.stripe").count() == len(invoices)

    # Every usage event billed once: stored once, rolled up once, on an invoice line once.
    seconds = Decimal(EVENT_SECONDS) * month.events
    assert UsageEvent.objects.count() == month.events
    assert UsageEvent.objects.aggregate(total=Sum("quantity"))["total"] == seconds
    rolled = UsageRollup.objects.aggregate(quantity=Sum("quantity"), events=Sum("events"))
    assert rolled == {"quantity": seconds, "events": month.events}
    assert not UsageRollup.objects.filter(late=True).exclude(quantity=F("billed_quantity")).exists()
    assert InvoiceLine.objects.aggregate(hours=Sum("quantity"))["hours"] == seconds / 3600  # card-hours
    assert not UsageRollupDue.objects.exists()

    # The books reconcile, in this process and as the operator's command says.
    assert reconcile() == []
    command = subprocess.run(
        [sys.executable, "manage.py", "reconcile"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert command.returncode == 0, command.stdout + command.stderr
