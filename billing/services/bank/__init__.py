"""The compute bank: prepaid credit (grants), draws, expiry, holds on running work, top-ups.

- ``state``: balance, pending usage, held and available credit of a buyer;
- ``grants``: grants, draws in burn order, their reversal, expiry into breakage, low-balance events;
- ``holds``: holds on a prepaid buyer's running leases, their review against the horizon;
- ``top_ups``: top-ups through Stripe PaymentIntents, automatic top-ups.
"""
