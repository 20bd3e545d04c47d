from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import F, QuerySet, Sum
from django.db.models.functions import TruncDay

from billing.models import Invoice, ProviderStatement, UsageRollup
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
    # A bucket may have a late row beside the one its month's invoice billed: summed, as a day's hours are.
    period = TruncDay("hour", tzinfo=ZoneInfo(settings.BILLING_TIME_ZONE)) if granularity == "day" else F("hour")
    rows = (
        rollups.annotate(period_start=period)
        .values("lease_id", "pool_id", "metric", "model", "period_start")
        .annotate(total=Sum("quantity"), event_count=Sum("events"))
    )
    return [
        {
            "lease": row["lease_id"],
            "pool": row["pool_id"],
            "metric": row["metric"],
            "model": row["model"],
            "period_start": row["period_start"],
            "quantity": row["total"],
            "events": row["event_count"],
        }
        for row in rows.order_by("period_start", "lease_id", "metric", "model")
    ]


def invoice_list(*, organization: Organization) -> QuerySet[Invoice]:
    invoices = Invoice.objects.select_related("buyer")
    if organization.kind == Organization.Kind.OPERATOR:
        return invoices
    return invoices.filter(buyer=organization)


def statement_list(*, organization: Organization) -> QuerySet[ProviderStatement]:
    statements = ProviderStatement.objects.all()
    if organization.kind == Organization.Kind.OPERATOR:
        return statements
    return statements.filter(provider=organization)


def invoice_view(invoice: Invoice) -> Invoice:
    """The invoice as shown: a draft gets its lines and totals rated live from the usage so far."""
    if invoice.status != Invoice.Status.DRAFT:
        invoice.shown_lines = list(invoice.lines.all())  # type: ignore[attr-defined]
        return invoice
    from billing.services.invoices import draft_lines

    rated = draft_lines(invoice)
    invoice.shown_lines = [line.as_invoice_line(invoice, id=None) for line in rated]  # type: ignore[attr-defined]
    invoice.subtotal = invoice.amount_due = sum(line.amount for line in rated)
    return invoice
