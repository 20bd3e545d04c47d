"""VAT: prices are tax-inclusive, and the tax is split out of an amount in one place.

The rule (docs/architecture.md, "VAT"): each invoice line's tax is
``round_half_up(gross x rate / (1 + rate))`` to the fen, its amount without tax is
``gross - tax`` (so the two add up to the line exactly), and an invoice's or a
statement's tax is the sum of its lines' taxes, never a split of the total. A negative
line (a correction) splits to the negatives of the same magnitudes, so a correction
or a reversal takes back exactly the tax it stood for.

The rate is a setting per service kind (``VAT_RATES``): card-hours, tokens, fees.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.conf import settings


@dataclass(frozen=True)
class VatSplit:
    gross: int  # fen, tax included
    rate: Decimal
    tax: int  # fen

    @property
    def net(self) -> int:
        """The amount without tax, in fen: ``gross - tax``."""
        return self.gross - self.tax


def vat_rate_for(kind: str) -> Decimal:
    """The VAT rate of a service kind (an invoice line's unit: ``card_hour``, ``million_tokens``;
    or ``fee``). A kind the settings do not name is taxed as a fee."""
    rates: dict[str, Decimal] = settings.VAT_RATES
    return rates.get(kind, rates["fee"])


def vat_split(gross: int, rate: Decimal) -> VatSplit:
    """Split a tax-inclusive amount in fen into tax and the amount without it (see the module's rule)."""
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"VAT rate {rate} is not a finite non-negative number")
    sign = -1 if gross < 0 else 1
    with localcontext(prec=50):
        exact = Decimal(abs(gross)) * rate / (1 + rate)
    tax = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return VatSplit(gross=gross, rate=rate, tax=sign * tax)


def line_vat(*, unit: str, amount: int) -> VatSplit:
    """The split of an invoice line of this unit (its service kind)."""
    return vat_split(amount, vat_rate_for(unit))
