"""The compute bank pays what vouchers left of an invoice at finalization; a void gives it back.

Registered in ``BillingConfig`` after the voucher hooks (docs/architecture.md, "Money paths
and their order"): the bank draws what the invoice still owes, soonest-expiring
grant first; the invoice books the credit against the buyer's bank clearing, which
the draw credited; Stripe collects the rest.
"""

from datetime import datetime

from billing.models import CreditGrant, Invoice, InvoiceLine
from billing.services.bank.grants import bank_draw, bank_draws_reverse
from billing.services.invoices import Credit
from billing.services.ledger import Purpose, account_for
from core.money import format_yuan


def pay_from_bank(invoice: Invoice, lines: list[InvoiceLine], remaining: int, now: datetime) -> list[Credit]:
    if remaining <= 0 or not CreditGrant.objects.filter(buyer_id=invoice.buyer_id, remaining__gt=0).exists():
        return []
    drawn = bank_draw(buyer=invoice.buyer, amount=remaining, reference=invoice.reference, partial=True, now=now)
    if not drawn:
        return []
    return [
        Credit(
            amount=drawn,
            account=account_for(purpose=Purpose.BANK_CLEARING, organization=invoice.buyer, currency=invoice.currency),
            description=f"Compute bank credit paid {format_yuan(drawn)} of invoice {invoice.pk}",
        )
    ]


def give_back_to_bank(invoice: Invoice, now: datetime) -> None:
    if invoice.bank_credit:
        bank_draws_reverse(buyer=invoice.buyer_id, reference=invoice.reference, reason="invoice voided", now=now)
