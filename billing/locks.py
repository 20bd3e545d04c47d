"""Row locks of an invoice and of its buyer, in the one order every money path takes them.

An organization's row is never locked ``FOR UPDATE``: every row that references it (a grant, a
bank movement, a ledger account, an invoice) takes ``FOR KEY SHARE`` on it when its foreign key is
checked, at commit (Django's foreign keys are deferred), and ``FOR UPDATE`` blocks that. A path
that locked the buyer ``FOR UPDATE`` and then its bank (a void giving credit back) deadlocked with
one that locked the bank and then wrote a grant (an operator's grant): the bank, then at commit the
buyer. Where a buyer's work must take turns (a void and an issuer's claim review; payments deciding
whether its orders are held), its row is locked ``FOR NO KEY UPDATE``, which serializes those paths
and lets a foreign key check through. ``select_for_update`` joined to the buyer by
``select_related`` locks the buyer row too, at the statement's strength: say ``of=("self",)``.

Order, in finalization and void alike: the invoice, then its buyer, then the buyer's bank, then the
voucher claim, programs and vouchers (``vouchers.services``), then the grants, then the providers'
statements last (each kind in primary-key order).
"""

from typing import Any

from billing.models import Invoice
from organizations.models import Organization


def invoice_lock(*, invoice_id: Any, buyer: bool = True) -> Invoice:
    """The invoice, locked ``FOR UPDATE`` until the transaction ends, with its buyer loaded; with
    ``buyer``, the buyer's row is locked too, ``FOR NO KEY UPDATE``, and loaded as it stands then
    (see the module's docstring)."""
    if not buyer:
        return Invoice.objects.select_for_update(of=("self",)).select_related("buyer").get(pk=invoice_id)
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    # Loaded as it stands once locked: a transaction that held it may have changed it meanwhile.
    invoice.buyer = Organization.objects.select_for_update(no_key=True).get(pk=invoice.buyer_id)
    return invoice
