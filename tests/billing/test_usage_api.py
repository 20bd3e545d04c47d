import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import orjson
import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Invoice, UsageRollup
from billing.services.invoices import invoices_finalize
from organizations.services import api_key_create
from tests.billing.conftest import gpu_event, running_lease
from tests.billing.factories import usage
from tests.factories import BuyerFactory, ProviderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def reported(lease, provider, make_client):  # type: ignore[no-untyped-def]
    """Card-seconds in the last three hours, rolled up."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    events = [
        {**gpu_event(lease, f"e{h}-{m}", 600), "time": (now - timedelta(hours=h) + timedelta(minutes=m)).isoformat()}
        for h in (1, 2)
        for m in (0, 30)
    ]
    response = make_client(provider).generic(
        "POST", "/api/v1/usage-events/", orjson.dumps(events), content_type="application/json"
    )
    assert response.json()["accepted"] == 4
    call_command("rebuild_usage_rollups", stdout=StringIO(), stderr=StringIO())
    return lease


def test_a_buyer_reads_hourly_usage_of_its_leases(reported, buyer_client) -> None:
    rows = buyer_client.get("/api/v1/usage/", {"metric": "gpu_seconds"}).json()

    assert [(row["lease"], Decimal(row["quantity"]), row["events"]) for row in rows] == [
        (str(reported.pk), Decimal(1200), 2)
    ] * 2


def test_a_provider_reads_usage_by_day_in_shanghai_time(reported, provider, make_client) -> None:
    rows = make_client(provider).get("/api/v1/usage/", {"granularity": "day", "pool": str(reported.pool_id)}).json()

    assert sum(Decimal(row["quantity"]) for row in rows) == Decimal(2400)
    # A day starts at midnight in Asia/Shanghai: 16:00 UTC the day before.
    assert rows and all(row["period_start"].endswith("T16:00:00Z") for row in rows)


def test_another_buyer_or_provider_sees_no_usage(reported, other_buyer_client, make_client) -> None:
    assert other_buyer_client.get("/api/v1/usage/").json() == []
    assert make_client(ProviderFactory()).get("/api/v1/usage/", {"lease": str(reported.pk)}).json() == []


@pytest.mark.parametrize(
    "params",
    [
        {"granularity": "minute"},
        {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"lease": "nope"},
        {"secret": "1"},
    ],
)
def test_bad_usage_queries_are_a_400(buyer_client, params) -> None:  # type: ignore[no-untyped-def]
    assert buyer_client.get("/api/v1/usage/", params).status_code == 400


def test_the_rebuild_command_recreates_deleted_or_tampered_rollups(reported) -> None:
    before = set(UsageRollup.objects.values_list("lease_id", "metric", "hour", "quantity"))
    UsageRollup.objects.filter(pk=UsageRollup.objects.first().pk).update(quantity=Decimal(1))
    UsageRollup.objects.last().delete()

    call_command("rebuild_usage_rollups", stdout=StringIO(), stderr=StringIO())

    assert set(UsageRollup.objects.values_list("lease_id", "metric", "hour", "quantity")) == before


@pytest.mark.celery_worker
def test_a_real_worker_rolls_up_what_was_ingested(celery_worker_process) -> None:
    provider = ProviderFactory()
    lease = running_lease(buyer=BuyerFactory(), provider=provider)
    _, raw_key = api_key_create(organization=provider, name="agent")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    client.generic(
        "POST", "/api/v1/usage-events/", orjson.dumps([gpu_event(lease, "w1", 900)]), content_type="application/json"
    )

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not UsageRollup.objects.filter(lease=lease).exists():
        time.sleep(0.2)
    assert UsageRollup.objects.get(lease=lease).quantity == Decimal(900)


def test_an_hour_with_usage_added_after_its_invoice_was_finalized_reads_as_one_total(
    reported, buyer_client, buyer
) -> None:
    month = Invoice.objects.get(buyer=buyer)
    invoices_finalize(invoice_ids=[month.pk], now=month.period_end)
    hour = UsageRollup.objects.order_by("hour").first().hour  # type: ignore[union-attr]
    usage(reported, hour, seconds=3000)  # the events of that hour now sum to 3000

    rows = buyer_client.get("/api/v1/usage/", {"metric": "gpu_seconds"}).json()

    assert UsageRollup.objects.filter(late=True).count() == 1
    assert [Decimal(row["quantity"]) for row in rows] == [Decimal(3000), Decimal(1200)]
