"""Vouchers pay their share of an invoice at finalization; a void gives it back.

Billing hands vouchers plain charge lines and posts, for what they pay, a
receivable from each issuer: ``invoices_finalize`` calls ``redeem_vouchers`` by
name before the bank pays, and ``invoice_void`` calls ``reverse_vouchers``.
Only usage lines of the invoice's own period are offered: adjustment lines for
late usage of an earlier month belong to another period's voucher terms.

A voucher pays its share of each hour of usage inside its validity, so each line
goes with its fen by the hour its usage happened in (``ChargeLine.hours``): the
line's amount split (largest remainder, ``core.money.split``) in proportion to
the exact amount of each hour, rated again from the period's rollups hour by
hour (``rating.rate_by_hour``). The lines stay what they are (one per rate, not
per hour); what vouchers pay of a line is exact to the fen of its hours.
"""

from datetime import datetime
from decimal import Decimal

from billing.models import Invoice, InvoiceLine, UsageRollup
from billing.rating import line_key, rate_by_hour
from billing.services.ledger import Credit, Purpose, account_for
from core.money import split
from marketplace.models import Lease
from organizations.models import Organization
from pools.models import ResourcePool
from vouchers.charges import ChargeLine
from vouchers.selectors import redeemable_vouchers
from vouchers.services import vouchers_redeem, vouchers_reverse


def redeem_vouchers(*, invoice: Invoice, lines: list[InvoiceLine], remaining: int, now: datetime) -> list[Credit]:
    offered = [line for line in lines if line.kind == InvoiceLine.Kind.USAGE and line.amount > 0]
    if not offered or remaining <= 0 or not redeemable_vouchers(buyer=invoice.buyer, at=now).exists():
        return []
    workloads = dict(Lease.objects.filter(pk__in={line.lease_id for line in offered}).values_list("pk", "workload"))
    pools = {
        pk: (hub, gpu)
        for pk, hub, gpu in ResourcePool.objects.filter(pk__in={line.pool_id for line in offered}).values_list(
            "pk", "hub_id", "gpu_model_id"
        )
    }
    hourly = rate_by_hour(
        UsageRollup.objects.filter(
            buyer_id=invoice.buyer_id, hour__gte=invoice.period_start, hour__lt=invoice.period_end
        )
    )
    result = vouchers_redeem(
        buyer=invoice.buyer,
        invoice_ref=str(invoice.pk),
        lines=[
            ChargeLine(
                line_ref=str(line.pk),
                amount=line.amount,
                lease_id=str(line.lease_id),
                pool_id=str(line.pool_id),
                provider_id=str(line.provider_id),
                hub=pools[line.pool_id][0],
                gpu_model=pools[line.pool_id][1],
                workload=workloads[line.lease_id],
                period_start=invoice.period_start,
                period_end=invoice.period_end,
                hours=_hours(line.amount, hourly.get(line_key(line), {})),
            )
            for line in offered
        ],
        at=now,
    )
    for outcome in result.lines:
        if outcome.voucher_amount:
            InvoiceLine.objects.filter(pk=outcome.line_ref).update(voucher_amount=outcome.voucher_amount)
    return [
        Credit(
            amount=owed,
            account=account_for(purpose=Purpose.VOUCHER_RECEIVABLE, organization=Organization(pk=issuer_id)),
            description=f"Compute vouchers paid of invoice {invoice.pk}",
        )
        for issuer_id, owed in sorted(result.by_issuer().items())
    ]


def _hours(amount: int, hourly: dict[datetime, Decimal]) -> tuple[tuple[datetime, int], ...]:
    """The line's fen by the hour its usage happened in, in proportion to each hour's exact amount."""
    hours = sorted(hour for hour, exact in hourly.items() if exact > 0)
    if not hours:
        return ()
    return tuple(zip(hours, split(amount, [hourly[hour] for hour in hours]), strict=True))


def reverse_vouchers(*, invoice: Invoice, now: datetime) -> None:
    """The value goes back to the vouchers; the ledger side is the reversal of the credit entries."""
    if invoice.voucher_credit:
        vouchers_reverse(invoice_ref=str(invoice.pk), at=now)
