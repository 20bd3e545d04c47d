from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import F, Sum
from django.db.models.functions import TruncDay

from billing.models import UsageRollup
from organizations.models import Organization


def usage_series(
    *,
    organization: Organization,
    start: datetime,
    end: datetime,
    granularity: str = "hour",
    lease: Any = None,
    pool: Any = None,
    metric: str | None = None,
) -> list[dict[str, Any]]:
    """Usage by lease, pool, metric and hour (UTC) or day (in the billing time zone)."""
    party = "buyer" if organization.kind == Organization.Kind.BUYER else "provider"
    rollups = UsageRollup.objects.filter(**{party: organization}, hour__gte=start, hour__lt=end)
    if lease:
        rollups = rollups.filter(lease_id=lease)
    if pool:
        rollups = rollups.filter(pool_id=pool)
    if metric:
        rollups = rollups.filter(metric=metric)
    rows: Any
    if granularity == "day":
        period = TruncDay("hour", tzinfo=ZoneInfo(settings.BILLING_TIME_ZONE))
        rows = (
            rollups.annotate(period_start=period)
            .values("lease_id", "pool_id", "metric", "model", "period_start")
            .annotate(total=Sum("quantity"), event_count=Sum("events"))
        )
    else:
        rows = rollups.values("lease_id", "pool_id", "metric", "model", "quantity", "events", period_start=F("hour"))
    return [
        {
            "lease": row["lease_id"],
            "pool": row["pool_id"],
            "metric": row["metric"],
            "model": row["model"],
            "period_start": row["period_start"],
            "quantity": row.get("total", row.get("quantity")),
            "events": row.get("event_count", row.get("events")),
        }
        for row in rows.order_by("period_start", "lease_id", "metric", "model")
    ]
