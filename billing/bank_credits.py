"""The compute bank's step of month-end: it pays what vouchers left of an invoice; a void gives it back.

``invoices_finalize`` calls these by name, after the vouchers (docs/architecture.md,
"Money paths and their order"): the banks of the batch's buyers are locked first,
in primary-key order; the bank draws what each invoice still owes, soonest-expiring
grant first; the invoice books the credit against the buyer's bank clearing, which
the draw credited; Stripe collects the rest. The low-balance check runs once the
invoices are finalized: before, their usage still counts as pending beside the
credit drawn for it, and the balance would look lower than it is.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from billing.models import Bank, CreditGrant, Invoice
from billing.services.bank.grants import bank_balance_changed, bank_draw, bank_draws_reverse
from billing.services.ledger import Credit, Purpose, account_for
from core.money import format_yuan


def banks_lock(*, buyer_ids: Iterable[Any]) -> None:
    """Lock the banks of these buyers (those that have one), in primary-key order."""
    list(Bank.objects.select_for_update().filter(organization_id__in=set(buyer_ids)).order_by("pk").values_list("pk"))


def pay_from_bank(*, invoice: Invoice, remaining: int, now: datetime) -> list[Credit]:
    if remaining <= 0 or not CreditGrant.objects.filter(buyer_id=invoice.buyer_id, remaining__gt=0).exists():
        return []
    drawn = bank_draw(
        buyer=invoice.buyer, amount=remaining, reference=invoice.reference, partial=True, review=False, now=now
    )
    if not drawn:
        return []
    return [
        Credit(
            amount=drawn,
            account=account_for(purpose=Purpose.BANK_CLEARING, organization=invoice.buyer, currency=invoice.currency),
            description=f"Compute bank credit paid {format_yuan(drawn)} of invoice {invoice.pk}",
        )
    ]


def banks_review(*, buyer_ids: Iterable[Any], now: datetime) -> None:
    """After the invoices that drew on these buyers' banks are finalized: low-balance events, automatic top-ups."""
    for bank in Bank.objects.select_for_update().filter(organization_id__in=set(buyer_ids)).order_by("pk"):
        bank_balance_changed(bank=bank, now=now)


def give_back_to_bank(*, invoice: Invoice, now: datetime) -> None:
    if invoice.bank_credit:
        bank_draws_reverse(buyer=invoice.buyer, reference=invoice.reference, reason="invoice voided", now=now)
