"""The buyer's compute-bank credit, read through billing once billing offers it.

The compute bank is being built in ``billing``; until ``billing.selectors`` has
``bank_balance(organization=...)`` (fen available to spend), the page says the
bank is not enabled and shows no credit.
"""

from billing import selectors
from organizations.models import Organization


def bank_credit(*, buyer: Organization) -> int | None:
    """Credit left in fen, or None while billing has no compute bank."""
    reader = getattr(selectors, "bank_balance", None)
    if reader is None:
        return None
    return int(reader(organization=buyer))
