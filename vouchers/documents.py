"""The fapiao numbers of the invoices vouchers paid, for the issuer's report.

Vouchers sit below billing, which keeps the fapiao: billing registers its lookup at start-up
(``billing.apps``), and the report asks through here. One lookup, not a list: there is one
place fapiao are kept.
"""

from collections.abc import Callable, Iterable

# invoice refs (a redemption's ``invoice_ref``: the invoice's id) -> the fapiao numbers of each, as shown
FapiaoLookup = Callable[[Iterable[str]], dict[str, str]]

_lookup: list[FapiaoLookup] = []


def fapiao_lookup_register(lookup: FapiaoLookup) -> None:
    _lookup[:] = [lookup]


def fapiao_numbers(invoice_refs: Iterable[str]) -> dict[str, str]:
    """Each invoice's fapiao numbers (empty for one without); nothing if billing is not installed."""
    return _lookup[0](invoice_refs) if _lookup else {}
