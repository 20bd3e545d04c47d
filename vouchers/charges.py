"""The plain values billing hands to vouchers, and what vouchers hand back.

No models here and nothing from billing: an invoice line arrives as a
``ChargeLine`` of strings, integers and times, and the answer is made of the
same, so that billing can post its ledger entries from it.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class ChargeLine:
    """One invoice line: ``amount`` fen for some usage of one lease."""

    line_ref: str  # the invoice line's id, as a string
    amount: int  # fen, >= 0
    lease_id: str
    pool_id: str
    provider_id: str
    hub: str
    gpu_model: str
    workload: str
    period_start: datetime
    period_end: datetime
    # When the usage happened: (the start of each clock hour, the fen of the line used in it), the
    # parts adding up to ``amount``. A voucher pays its share of each hour inside its validity. Empty
    # (a quote's estimate, whose usage is still to come): the amount is spread evenly over the period.
    hours: tuple[tuple[datetime, int], ...] = ()


@dataclass(frozen=True)
class Ineligibility:
    """Why a voucher paid nothing, or less than its share, of a line."""

    code: str
    message: str
    voucher_id: str | None = None  # None when no voucher is concerned (a related party, no voucher at all)
    voucher_code: str | None = None


@dataclass(frozen=True)
class RedemptionLine:
    """One voucher's payment of one line: billing posts a voucher receivable from ``issuer_id`` for it."""

    redemption_id: str
    line_ref: str
    voucher_id: str
    voucher_code: str
    program_id: str
    issuer_id: str
    amount: int  # fen


@dataclass(frozen=True)
class LineOutcome:
    line_ref: str
    amount: int  # fen: the whole line
    voucher_amount: int  # fen paid by vouchers
    reasons: tuple[Ineligibility, ...] = ()

    @property
    def buyer_amount(self) -> int:
        """What the buyer still owes on the line; with ``voucher_amount`` it makes the line exactly."""
        return self.amount - self.voucher_amount


@dataclass(frozen=True)
class RedemptionResult:
    invoice_ref: str
    lines: tuple[LineOutcome, ...]
    redemptions: tuple[RedemptionLine, ...]
    replayed: bool = False  # True when the invoice had been redeemed before and nothing new was created

    @property
    def total(self) -> int:
        """Fen the vouchers pay of the whole invoice."""
        return sum(redemption.amount for redemption in self.redemptions)

    def by_issuer(self) -> dict[str, int]:
        """Fen owed by each issuer (its id) for this invoice."""
        owed: dict[str, int] = {}
        for redemption in self.redemptions:
            owed[redemption.issuer_id] = owed.get(redemption.issuer_id, 0) + redemption.amount
        return owed


@dataclass(frozen=True)
class VoucherReturn:
    """What one voucher got back when an invoice was voided."""

    voucher_id: str
    voucher_code: str
    program_id: str
    issuer_id: str
    returned: int  # fen back on the voucher (and on the yearly cap)
    breakage: int  # fen the voucher could not take back, having expired or been revoked: released to the budget

    @property
    def amount(self) -> int:
        return self.returned + self.breakage


@dataclass(frozen=True)
class ReversalResult:
    invoice_ref: str
    vouchers: tuple[VoucherReturn, ...] = field(default_factory=tuple)
    replayed: bool = False  # True when the invoice had been reversed before

    @property
    def total(self) -> int:
        """Fen of voucher credit taken off the invoice: the issuers no longer owe it."""
        return sum(item.amount for item in self.vouchers)

    def by_issuer(self) -> dict[str, int]:
        owed: dict[str, int] = {}
        for item in self.vouchers:
            owed[item.issuer_id] = owed.get(item.issuer_id, 0) + item.amount
        return owed
