"""An invoice as a finance department reads it, for the print view and the PDF alike.

The figures are the API's (``GET invoices/{id}/``, ``InvoiceSerializer``); around them: the
seller (``settings.INVOICE_SELLER_*``) and the buyer with their unified social credit codes, the
period as dates, the due date and whether it is overdue, the lines grouped by pool and GPU model,
and how to pay.
"""

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings

from billing.models import Invoice
from billing.selectors import invoice_days_overdue, invoice_due_at, invoice_owed, invoice_view
from billing.serializers import InvoiceSerializer
from core.money import format_yuan
from pools.models import ResourcePool


def invoice_document(invoice: Invoice, *, now: datetime) -> dict[str, Any]:
    """``invoice`` (with its buyer and lines loaded) as the print view and the PDF show it."""
    data = dict(InvoiceSerializer(invoice_view(invoice)).data)
    buyer = invoice.buyer
    days_overdue = invoice_days_overdue(invoice, now=now)
    data.update(
        {
            "buyer_name": buyer.legal_name,
            "buyer_credit_code": buyer.credit_code,
            "buyer_address": ", ".join(part for part in (buyer.city, buyer.province) if part),
            "seller": {
                "name": settings.INVOICE_SELLER_NAME,
                "credit_code": settings.INVOICE_SELLER_CREDIT_CODE,
                "address": settings.INVOICE_SELLER_ADDRESS,
            },
            "bank": {"name": settings.INVOICE_BANK_NAME, "account": settings.INVOICE_BANK_ACCOUNT},
            "period_first_day": invoice.period_start,
            "period_last_day": invoice.period_end - timedelta(days=1),
            "due_at": invoice_due_at(invoice),
            "days_overdue": days_overdue,
            "state": "overdue" if days_overdue is not None else invoice.status,
            "status_label": str(Invoice.Status(invoice.status).label),
            "owed": format_yuan(invoice_owed(invoice)),
            "owed_fen": invoice_owed(invoice),
            "refunded_fen": invoice.amount_refunded,
            "groups": _groups(data["lines"]),
        }
    )
    return data


def _groups(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines by pool and GPU model, each group with its card-hours and amount."""
    pools = ResourcePool.objects.select_related("gpu_model", "hub").in_bulk({UUID(str(line["pool"])) for line in lines})
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        grouped[UUID(str(line["pool"]))].append(line)
    groups = []
    for pool_id, pool_lines in grouped.items():
        pool = pools.get(pool_id)
        groups.append(
            {
                "pool": str(pool_id),
                "name": pool.name if pool else str(pool_id),
                "gpu_model": pool.gpu_model.name if pool else "",
                "hub": pool.hub.local_name if pool else "",
                "lines": pool_lines,
                "card_hours": sum(
                    (Decimal(line["quantity"]) for line in pool_lines if line["unit"] == "card_hour"), Decimal(0)
                ),
                "amount": format_yuan(sum(int(Decimal(line["amount"]) * 100) for line in pool_lines)),
            }
        )
    return sorted(groups, key=lambda group: (group["gpu_model"], group["name"]))
