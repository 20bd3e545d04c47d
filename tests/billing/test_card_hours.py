"""Card-hours by period, as the dashboards chart them, add up as the usage API's rows do."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.selectors import card_hours, usage_series
from tests.billing.factories import leased, usage

pytestmark = pytest.mark.django_db

# 15:00 UTC is 23:00 in Shanghai; 16:00 UTC is midnight there, the next billing day.
EVENING = datetime(2026, 3, 10, 15, tzinfo=UTC)


def test_days_split_at_midnight_in_the_billing_time_zone_like_the_usage_api(buyer, provider, operator) -> None:
    lease = leased(buyer=buyer, provider=provider, at=EVENING - timedelta(days=1))
    usage(lease, EVENING, seconds=3600)
    usage(lease, EVENING + timedelta(hours=1), seconds=7200)
    window = {"start": EVENING - timedelta(days=1), "end": EVENING + timedelta(days=1)}

    days = card_hours(organization=buyer, granularity="day", **window)

    api = usage_series(organization=buyer, granularity="day", metric="gpu_seconds", **window)
    assert [(day["period_start"], day["card_hours"]) for day in days] == [
        (row["period_start"], row["quantity"] / 3600) for row in api
    ]
    assert [day["card_hours"] for day in days] == [Decimal(1), Decimal(2)]
    assert card_hours(organization=operator, granularity="day", **window) == days


def test_hours_by_pool_are_the_usage_apis_hours_summed_over_leases(buyer, provider) -> None:
    first = leased(buyer=buyer, provider=provider, at=EVENING - timedelta(days=1))
    usage(first, EVENING, seconds=1800)
    window = {"start": EVENING - timedelta(hours=1), "end": EVENING + timedelta(hours=1)}

    (row,) = card_hours(organization=provider, granularity="hour", by_pool=True, **window)

    assert row == {"period_start": EVENING, "pool_id": first.pool_id, "card_hours": Decimal("0.5")}
