"""A month for a buyer, from usage events to a paid invoice and the provider's statement."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import orjson
import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import Invoice, UsageEvent
from billing.periods import month_of
from billing.services.invoices import invoice_finalize, invoices_due_for_finalizing
from billing.services.payments import invoice_collect, payment_method_set
from billing.services.usage import usage_rollup_buckets
from marketplace.services import lease_start
from tests.billing.factories import leased
from tests.billing.test_payments import GOOD_CARD, card

pytestmark = pytest.mark.django_db


def test_usage_events_become_a_paid_invoice_and_a_statement_and_the_books_reconcile(
    stripe, buyer, provider, make_client, buyer_client
) -> None:
    month_start, month_end = month_of(month_of(timezone.now())[0] - timedelta(days=1))
    lease = leased(buyer=buyer, provider=provider, at=month_start, hours=24 * 31)
    lease_start(lease_id=lease.pk, by="test", now=month_start)
    events = [
        {
            "specversion": "1.0",
            "id": f"{lease.pk}:{day}:{minute}",
            "source": "agent://e2e",
            "type": "compute.gpu_seconds",
            "subject": str(lease.pk),
            "time": (month_start + timedelta(days=day, hours=2, minutes=minute)).isoformat(),
            "data": {"quantity": 8 * 60, "cards": 8},
        }
        for day in range(20)
        for minute in range(0, 60, 1)
    ]
    agent = make_client(provider)
    answer = agent.generic(
        "POST", "/api/v1/usage-events/", orjson.dumps(events), content_type="application/json"
    ).json()
    assert (answer["accepted"], answer["rejected"]) == (1200, 0), answer["errors"][:3]
    hours = {(lease.pk, e.time.replace(minute=0, second=0, microsecond=0)) for e in UsageEvent.objects.all()}
    usage_rollup_buckets(buckets=hours)
    payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))

    (invoice_id,) = invoices_due_for_finalizing(now=timezone.now())
    invoice = invoice_finalize(invoice_id=invoice_id)
    invoice_collect(invoice_id=invoice_id)

    shown = buyer_client.get(f"/api/v1/invoices/{invoice_id}/").json()
    assert shown["status"] == "paid"
    assert shown["period_start"] == month_start.isoformat().replace("+00:00", "Z")
    assert sum(Decimal(line["quantity"]) for line in shown["lines"]) == Decimal(20 * 8)  # card-hours
    assert Decimal(shown["amount_paid"]) == Decimal(shown["subtotal"]) == Decimal(invoice.subtotal) / 100
    statement = make_client(provider).get("/api/v1/statements/").json()["results"][0]
    assert Decimal(statement["gross"]) == Decimal(shown["subtotal"])
    assert Decimal(statement["net"]) + Decimal(statement["commission"]) == Decimal(statement["gross"])
    out = StringIO()
    call_command("reconcile", stdout=out)
    assert "reconcile" in out.getvalue()
    assert Invoice.objects.get(pk=invoice_id).status == "paid"
    assert month_end <= timezone.now()
