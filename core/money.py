"""Money in integer minor units (fen), rounded in one place, split without loss.

Ledger, invoice and payment amounts are integers in fen. Rates are Decimal.
``round_to_fen`` is the one rounding rule (ROUND_HALF_UP) and ``split`` the one
way to divide an amount: its parts always add up to the whole. Prices are shown
with at most four places (``shown_price``, also half up), and never rounded inside.
"""

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "CNY"
FEN_PER_YUAN = 100
_FEN = Decimal("0.01")
# Prices (yuan per card-hour, per million tokens) as clients and people see them. Rates stay
# exact inside and in the database (up to 10 places); only what is shown is rounded.
PRICE_PLACES = 4
_PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_PLACES)


def round_to_fen(amount_yuan: Decimal) -> int:
    """Round an exact yuan amount (a rated quantity, say) half up to whole fen."""
    if not amount_yuan.is_finite():
        raise ValueError(f"cannot round {amount_yuan} to fen")
    return int(amount_yuan.quantize(_FEN, rounding=ROUND_HALF_UP) * FEN_PER_YUAN)


def shown_price(rate: Decimal | str | float) -> Decimal:
    """A price as the API and the dashboards show it: ``PRICE_PLACES`` places, rounded half up."""
    value = rate if isinstance(rate, Decimal) else Decimal(str(rate))
    if not value.is_finite():
        raise ValueError(f"{rate} is not a finite price")
    return value.quantize(_PRICE_QUANTUM, rounding=ROUND_HALF_UP)


def yuan_to_fen(amount_yuan: Decimal) -> int:
    """Convert a yuan amount that is already whole fen; refuse anything finer."""
    if not amount_yuan.is_finite():
        raise ValueError(f"{amount_yuan} is not a finite amount")
    fen = amount_yuan * FEN_PER_YUAN
    if fen != fen.to_integral_value():
        raise ValueError(f"{amount_yuan} has more than two decimal places")
    return int(fen)


def fen_to_yuan(fen: int) -> Decimal:
    """``1500000`` -> ``Decimal("15000.00")``."""
    return (Decimal(fen) / FEN_PER_YUAN).quantize(_FEN)


def estimate_in_yuan(amount_yuan: Decimal | str | float) -> Decimal:
    """An estimate (a quote's, an order's) to the fen, rounded by ``round_to_fen``."""
    return fen_to_yuan(round_to_fen(Decimal(str(amount_yuan))))


def format_yuan(fen: int) -> str:
    """The API's money string: ``1500000`` -> ``"15000.00"``."""
    return str(fen_to_yuan(fen))


def split(total: int, weights: Sequence[Decimal | int]) -> list[int]:
    """Divide ``total`` fen in proportion to ``weights``; the parts sum to ``total``.

    Largest remainder method: each part gets the floor of its exact share, and
    the fen left over go one each to the parts with the largest remainders
    (earlier parts first on ties), so the result is deterministic.
    """
    if not weights:
        raise ValueError("split needs at least one weight")
    decimal_weights = [Decimal(w) for w in weights]
    if any(not w.is_finite() or w < 0 for w in decimal_weights):
        raise ValueError("weights must be finite and non-negative")
    weight_sum = sum(decimal_weights, Decimal(0))
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")

    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    exact = [Decimal(magnitude) * w / weight_sum for w in decimal_weights]
    parts = [int(e) for e in exact]  # floor, since every share is non-negative
    leftover = magnitude - sum(parts)
    by_remainder = sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in by_remainder[:leftover]:
        parts[i] += 1
    return [sign * part for part in parts]


def share(total: int, ratio: Decimal) -> tuple[int, int]:
    """Split ``total`` into ``ratio`` of it (rounded half up) and the rest.

    ``share(1001, Decimal("0.2"))`` -> ``(200, 801)``: a voucher paying 20% of
    a bill and the buyer's part always add up to the bill.
    """
    if not ratio.is_finite() or not Decimal(0) <= ratio <= Decimal(1):
        raise ValueError(f"ratio {ratio} is outside 0..1")
    sign = -1 if total < 0 else 1
    part = int((Decimal(abs(total)) * ratio).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return sign * part, total - sign * part
