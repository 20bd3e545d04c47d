"""A small model of the money of Compute Grid, in plain Python, for the money state machine.

It knows nothing of the service's code: it is the rules of docs/architecture.md and the issues
written out again with exact fractions. Usage is rated with the price version in force when it
happened (the pool's first, for usage stamped before the pool was listed), with the time-of-use
band of its local hour, and rounded once per invoice line; vouchers pay their program's
share of eligible lines, soonest-expiring first, within their remaining value, the yearly
cap and their validity (hour by hour: a voucher issued mid-month pays its share of the hours
of usage after it, not a share of the month); the buyer owes the rest, collected by card or transfer; a void
gives everything back. Amounts are integer fen; rates are exact.
"""

import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from core.timezones import local_zone

LATE_INVOICE_GRACE = timedelta(days=7)
HOUR = timedelta(hours=1)
NEVER = datetime.max.replace(tzinfo=UTC)  # the expiry of grants that never expire, for sorting


def round_half_up(exact: Fraction) -> int:
    """An exact non-negative amount rounded half up to a whole unit."""
    assert exact >= 0
    return int(exact + Fraction(1, 2))


def share(total: int, ratio: Decimal) -> int:
    """``ratio`` of ``total`` fen, rounded half up."""
    return round_half_up(total * Fraction(ratio))


def prorate(amount: int, inside: int, duration: int) -> int:
    """The part of ``amount`` for ``inside`` of ``duration``: largest remainder, the first part wins a tie."""
    exact = Fraction(amount * inside, duration)
    first, second = int(exact), int(amount - exact)
    if first + second < amount and exact - first >= (amount - exact) - second:
        first += 1
    return first


def split(amount: int, weights: list[Fraction]) -> list[int]:
    """``amount`` in parts in proportion to ``weights``: largest remainder, earlier parts win ties."""
    total = sum(weights)
    exact = [amount * weight / total for weight in weights]
    parts = [int(part) for part in exact]
    for index in sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))[: amount - sum(parts)]:
        parts[index] += 1
    return parts


def month_of(at: datetime) -> tuple[datetime, datetime]:
    local = at.astimezone(local_zone())
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass
class Version:
    effective_from: datetime  # new orders pay it from then
    base: Decimal
    factors: dict[str, Decimal]
    running_from: datetime | None = None  # running leases pay it from then, outside their lock (set by the model)

    def rate(self, band: str) -> Fraction:
        return Fraction(self.base) * Fraction(self.factors.get(band, Decimal(1)))

    def rises_from(self, other: "Version", bands: list[str]) -> bool:
        return any(self.rate(band) > other.rate(band) for band in set(bands))


@dataclass
class Pool:
    id: str
    provider: str
    bands: list[str]  # band of each local hour 0..23 (the hub's tariff)
    versions: list[Version]

    def version_at(self, at: datetime) -> int:
        """The version new orders get at ``at``; the first for a moment before the pool was listed."""
        index = bisect_right([version.effective_from for version in self.versions], at)
        return max(index, 1) - 1

    def running_version_at(self, at: datetime) -> int:
        """The version running leases pay at ``at`` outside their lock: the newest that reached them."""
        reached = [
            n for n, version in enumerate(self.versions) if (version.running_from or version.effective_from) <= at
        ]
        return max(reached, default=0)


@dataclass
class Lease:
    id: str
    pool: Pool
    buyer: str
    cards: int
    started_at: datetime
    until: datetime  # the end of its run: its booked end, or when it ended if earlier
    tokens_per_second: int = 0  # of one card of its GPU model
    locked: int = 0  # the version it was placed on: its booked hours pay it
    booked_end: datetime | None = None  # its price lock ends then (its booked end)
    deposit: "Deposit | None" = None  # placed on another buyer's deposited cards: billed as a resale

    def version_at(self, at: datetime) -> int:
        """The version that prices its usage at ``at``: its own in its booked hours, then the running one."""
        if self.booked_end is None or at < self.booked_end:
            return self.locked
        return self.pool.running_version_at(at)

    def seconds_in(self, hour: datetime, now: datetime) -> int:
        """Whole seconds it ran in the hour starting at ``hour`` (up to ``now``)."""
        ran = (min(hour + HOUR, self.until, now) - max(hour, self.started_at)).total_seconds()
        return max(math.ceil(ran), 0)


@dataclass
class Reservation:
    """A reserved (take-or-pay) booking: every booked card-second is billed at its version's rate,
    used or not, in the month it falls in; cancelled before its start, a fee instead."""

    lease: Lease
    start: datetime
    booked_end: datetime
    cancelled_at: datetime | None = None


@dataclass
class Deposit:
    """Cards of a reserved booking deposited in the compute bank, from a whole hour to the booking's
    end: another buyer's on-demand lease may be placed on them (a resale, billed at the deposit's
    price when lower); the depositor's bank is credited at the reseller's finalization with each
    resale line less the platform's share. Withdrawn, it ends at the next whole hour or the end of
    its latest resale."""

    id: str
    lease: Lease  # the depositor's reserved lease
    cards: int
    start: datetime
    end: datetime
    price: Decimal | None
    withdrawn: bool = False
    resold: list[tuple[datetime, datetime, int]] = field(default_factory=list)  # resales' booked windows
    card_seconds: int = 0  # of resale lines on finalized invoices
    credit: int = 0  # granted to the depositor's bank

    def free(self, start: datetime, end: datetime) -> int:
        """Cards no resale holds at any moment of [start, end); 0 outside its window."""
        if start < self.start or end > self.end:
            return 0
        points = []
        for begin, finish, cards in self.resold:
            begin, finish = max(begin, start), min(finish, end)
            if begin < finish:
                points += [(begin, cards), (finish, -cards)]
        peak = booked = 0
        for _, change in sorted(points):  # ends before starts at one moment
            booked += change
            peak = max(peak, booked)
        return max(self.cards - peak, 0)


@dataclass
class Usage:
    """An hour of a lease: its month's invoice bills what it holds when it is finalized; what
    comes later is late usage, billed by the buyer's next invoice as an adjustment. Each
    event is rated with the version in force when it happened, as the versions stand when
    it is billed (a version may start before it is made, within the skew)."""

    events: list[tuple[datetime, int]] = field(default_factory=list)
    billed: dict[int, int] = field(default_factory=dict)  # seconds per version, by the month's invoice
    late_billed: dict[int, int] = field(default_factory=dict)  # by later invoices
    closed: bool = False  # the month's invoice is finalized

    @property
    def seconds(self) -> int:
        return sum(seconds for _, seconds in self.events)

    def by_version(self, lease: "Lease") -> dict[int, int]:
        seconds: dict[int, int] = defaultdict(int)
        for at, amount in self.events:
            seconds[lease.version_at(at)] += amount
        return seconds

    def unbilled(self, lease: "Lease") -> dict[int, int]:
        """Seconds per version no invoice has billed."""
        used = self.by_version(lease)
        if not self.closed:
            return used
        versions = set(used) | set(self.billed) | set(self.late_billed)
        return {v: used.get(v, 0) - self.billed.get(v, 0) - self.late_billed.get(v, 0) for v in versions}


@dataclass
class Program:
    id: str
    issuer: str
    budget: int
    coverage: Decimal
    yearly_cap: int
    valid_from: datetime
    valid_until: datetime
    providers: frozenset[str]  # empty: any
    committed: int = 0
    open: bool = True

    @property
    def budget_left(self) -> int:
        return self.budget - self.committed


@dataclass
class Voucher:
    id: str
    code: str
    program: Program
    buyer: str
    face_value: int
    valid_from: datetime
    valid_until: datetime
    remaining: int
    released: int = 0
    status: str = "active"

    @property
    def live(self) -> bool:
        return self.status in ("active", "exhausted")


@dataclass
class Grant:
    """Compute-bank credit: paid (a top-up) or given by the platform."""

    id: str
    buyer: str
    paid: bool
    amount: int
    expires_at: datetime | None
    priority: int
    created_at: datetime
    remaining: int = 0

    @property
    def account(self) -> tuple[str, str]:
        return ("bank_paid" if self.paid else "bank_granted", self.buyer)

    @property
    def burn_order(self) -> tuple[object, ...]:
        """Soonest-expiring first (never-expiring last), then by priority, then oldest, then by id."""
        return (self.expires_at is None, self.expires_at or NEVER, self.priority, self.created_at, self.id)


def vat_of(gross: int, rate: Fraction) -> int:
    """The tax in a tax-inclusive amount, half up to the fen, negatives mirrored (docs/architecture.md)."""
    exact = abs(gross) * rate / (1 + rate)
    tax = math.floor(exact + Fraction(1, 2))
    return tax if gross >= 0 else -tax


@dataclass
class Line:
    kind: str
    lease: str
    band: str
    version: int
    effective_from: datetime
    provider: str
    amount: int
    voucher_amount: int = 0
    hours: dict[datetime, int] = field(default_factory=dict)  # usage lines: card-seconds by UTC hour
    seconds: int = 0  # card-seconds billed (usage and resale lines)


@dataclass
class Invoice:
    buyer: str
    period_start: datetime
    period_end: datetime
    status: str = "draft"
    subtotal: int = 0
    voucher_credit: int = 0
    bank_credit: int = 0
    amount_due: int = 0
    amount_paid: int = 0
    amount_refunded: int = 0  # of what was paid, recorded to go back
    transfers: int = 0
    transfers_refunded: int = 0
    attempts: int = 0
    lines: list[Line] = field(default_factory=list)
    redemptions: list[tuple[Voucher, int, int]] = field(default_factory=list)  # (voucher, amount, cap year)
    draws: list[tuple[Grant, int]] = field(default_factory=list)
    card_payments: list[list[int]] = field(default_factory=list)  # [amount, to refund, refunded through Stripe]
    by_provider: dict[str, tuple[int, int]] = field(default_factory=dict)  # gross, commission
    tax: int = 0  # VAT in the subtotal: the lines' taxes summed

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.buyer, self.period_start)


class Refused(Exception):
    """The model's prediction that the service refuses the operation, with the error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class MoneyModel:
    def __init__(
        self,
        *,
        commission_rate: Decimal,
        hourly_tolerance: Decimal,
        dunning_steps: int,
        grace_seconds: int,
        tokens_headroom: Decimal,
        start_early_seconds: int,
        rise_notice_hours: int = 24,
    ) -> None:
        self.commission_rate = commission_rate
        self.vat_rate = Fraction(6, 100)  # VAT_RATE_CARD_HOUR's default: the model bills card-hours only
        self.hourly_tolerance = Fraction(hourly_tolerance)
        self.grace_seconds = grace_seconds
        self.tokens_headroom = Fraction(tokens_headroom)
        self.start_early_seconds = start_early_seconds
        self.rise_notice = timedelta(hours=rise_notice_hours)
        self.tokens: dict[tuple[str, datetime], int] = defaultdict(int)  # (lease, hour): tokens kept
        self.dunning_steps = dunning_steps
        self.pools: dict[str, Pool] = {}
        self.leases: dict[str, Lease] = {}
        self.usage: dict[tuple[str, datetime], Usage] = {}
        self.reservations: dict[str, Reservation] = {}
        self.cancel_fee_rate = Decimal("0.10")
        self.deposits: dict[str, Deposit] = {}
        self.deposit_platform_share = Decimal("0.20")
        self.credits_due: list[tuple[str, int]] = []  # (depositor, fen): resale credit not granted yet
        self.invoices: dict[tuple[str, datetime], Invoice] = {}
        self.programs: dict[str, Program] = {}
        self.vouchers: dict[str, Voucher] = {}
        self.cap_used: dict[tuple[str, str, int], int] = defaultdict(int)  # (buyer, issuer, year)
        self.grants: dict[str, Grant] = {}
        self.holds: dict[str, list[Any]] = {}  # lease: [amount, active]
        self.cards: dict[str, str] = {}  # buyer: "good" | "declined"
        self.blocked: set[str] = set()
        # The ledger, per account: (purpose, organization or None) -> fen (debit positive).
        self.ledger: dict[tuple[str, str | None], int] = defaultdict(int)
        self.statements: dict[tuple[str, datetime], int] = defaultdict(int)  # (provider, period) -> net

    # --- usage and prices ---------------------------------------------------------------

    def in_run(self, lease: Lease, at: datetime) -> bool:
        """Usage is taken from its start to the end of its run, give or take the clock-skew allowance."""
        grace = timedelta(seconds=self.grace_seconds)
        return lease.started_at - grace <= at <= lease.until + grace

    def hour_seconds(self, lease: Lease, hour: datetime, now: datetime) -> int:
        """The seconds an hour may bill per card: those it ran in it and the allowance, at most 3,600."""
        return min(3600, lease.seconds_in(hour, now) + self.grace_seconds)

    def report_usage(self, *, lease_id: str, at: datetime, seconds: int, now: datetime) -> bool:
        """A usage event of ``seconds`` card-seconds at ``at``; whether it is accepted."""
        lease = self.leases[lease_id]
        if not self.in_run(lease, at) or seconds > lease.cards * 3600:
            return False
        hour = at.replace(minute=0, second=0, microsecond=0)
        limit = int(lease.cards * self.hour_seconds(lease, hour, now) * (1 + self.hourly_tolerance))
        usage = self.usage.setdefault((lease_id, hour), Usage())
        if usage.seconds + seconds > limit:
            return False
        usage.events.append((at, seconds))
        usage.closed = self._invoice_for(lease.buyer, hour, now)
        return True

    def _invoice_for(self, buyer: str, hour: datetime, now: datetime) -> bool:
        """Usage of ``hour`` makes its month's draft, or once that is finalized the current month's
        (which bills it late). Whether the month is closed."""
        month = month_of(hour)
        invoice = self.invoices.get((buyer, month[0]))
        if invoice is None:
            self.invoices[(buyer, month[0])] = Invoice(buyer, *month)
        elif invoice.status != "draft":
            current = month_of(now)
            self.invoices.setdefault((buyer, current[0]), Invoice(buyer, *current))
        return invoice is not None and invoice.status != "draft"

    def report_tokens(self, *, lease_id: str, at: datetime, tokens: int, now: datetime) -> bool:
        """A token event (input + output ``tokens``) at ``at``; whether it is accepted: an hour of a
        lease keeps at most its cards' tokens per second x the seconds it may bill x the headroom.
        Tokens are not priced in this world: they move no money, only the books' checks see them."""
        lease = self.leases[lease_id]
        if not self.in_run(lease, at):
            return False
        hour = at.replace(minute=0, second=0, microsecond=0)
        seconds = self.hour_seconds(lease, hour, now)
        limit = int(lease.tokens_per_second * lease.cards * seconds * self.tokens_headroom)
        if self.tokens[(lease_id, hour)] + tokens > limit:
            return False
        self.tokens[(lease_id, hour)] += tokens
        self._invoice_for(lease.buyer, hour, now)
        return True

    def start_lease(self, *, lease: Lease, start_at: datetime, now: datetime) -> None:
        """A lease starts from its booked start less the early allowance, no sooner."""
        if now < start_at - timedelta(seconds=self.start_early_seconds):
            raise Refused("lease_not_due")
        self.leases[lease.id] = lease

    def change_price(self, *, pool_id: str, version: Version, now: datetime) -> bool:
        """A new version; returns whether it is a rise for running leases. A decrease reaches them
        at its start; a rise no higher than a rise still waiting, with that one; any other rise
        ``rise_notice`` after it is made."""
        pool = self.pools[pool_id]
        if version.effective_from <= pool.versions[-1].effective_from:
            raise Refused("price_version_order")
        latest, paid = pool.versions[-1], pool.versions[pool.running_version_at(version.effective_from)]
        rise = version.rises_from(paid, pool.bands)
        if not rise:
            version.running_from = version.effective_from
        elif (latest.running_from or latest.effective_from) > version.effective_from and not version.rises_from(
            latest, pool.bands
        ):
            version.running_from = latest.running_from
        else:
            version.running_from = max(version.effective_from, now + self.rise_notice)
        pool.versions.append(version)
        return rise

    # --- finalization -------------------------------------------------------------------

    def finalize(self, *, key: tuple[str, datetime], now: datetime, takes_late: bool = True) -> Invoice:
        """Finalize an invoice; of a batch, only the buyer's oldest invoice ``takes_late`` usage."""
        invoice = self.invoices[key]
        if invoice.status != "draft":
            return invoice
        if invoice.period_end > now:
            raise Refused("period_open")
        invoice.lines = self._take_unbilled(invoice, takes_late)
        invoice.subtotal = sum(line.amount for line in invoice.lines)
        invoice.tax = sum(vat_of(line.amount, self.vat_rate) for line in invoice.lines)
        self.ledger[("buyer_receivable", invoice.buyer)] += invoice.subtotal
        self.ledger[("vat_payable", None)] -= invoice.tax
        self.ledger[("platform_revenue", None)] += invoice.tax
        gross: dict[str, int] = defaultdict(int)
        for line in invoice.lines:
            if line.kind != "resale":  # the provider is paid for a resold card-hour by the reservation
                gross[line.provider] += line.amount
                continue
            platform = share(line.amount, self.deposit_platform_share)
            deposit = self.leases[line.lease].deposit
            assert deposit is not None
            deposit.card_seconds += line.seconds
            deposit.credit += line.amount - platform
            self.ledger[("platform_revenue", None)] -= platform
            self.ledger[("deposit_payable", None)] -= line.amount - platform
            if line.amount - platform:
                self.credits_due.append((deposit.lease.buyer, line.amount - platform))
        for provider, amount in gross.items():
            commission = share(amount, self.commission_rate)
            invoice.by_provider[provider] = (amount, commission)
            self.ledger[("provider_payable", provider)] -= amount - commission
            self.ledger[("platform_revenue", None)] -= commission
            self.statements[(provider, invoice.period_start)] += amount - commission
        for issuer, amount in sorted(self._redeem(invoice, now).items()):
            invoice.voucher_credit += amount
            self.ledger[("voucher_receivable", issuer)] += amount
            self.ledger[("buyer_receivable", invoice.buyer)] -= amount
        invoice.bank_credit = self._draw(invoice, invoice.subtotal - invoice.voucher_credit, now)
        invoice.amount_due = invoice.subtotal - invoice.voucher_credit - invoice.bank_credit
        invoice.status = "finalized" if invoice.amount_due else "paid"
        return invoice

    def _take_unbilled(self, invoice: Invoice, takes_late: bool) -> list[Line]:
        seconds: dict[tuple[str, str, int, str], int] = defaultdict(int)
        hours: dict[tuple[str, str, int, str], dict[datetime, int]] = defaultdict(dict)
        for (lease_id, hour), usage in self.usage.items():
            lease = self.leases[lease_id]
            if lease.buyer != invoice.buyer or hour >= invoice.period_end:
                continue
            if hour >= invoice.period_start:
                kind, deltas = "usage", usage.by_version(lease)
                usage.billed, usage.closed = dict(deltas), True
            elif takes_late and usage.closed:
                kind, deltas = "adjustment", usage.unbilled(lease)
                for version, delta in deltas.items():
                    usage.late_billed[version] = usage.late_billed.get(version, 0) + delta
            else:
                continue
            band = lease.pool.bands[hour.astimezone(local_zone()).hour]
            for version, delta in deltas.items():
                if delta:
                    seconds[(kind, lease_id, version, band)] += delta
                    hours[(kind, lease_id, version, band)][hour] = delta
        lines = []
        for key, total in seconds.items():
            kind, lease_id, version, band = key
            pool, deposit = self.leases[lease_id].pool, self.leases[lease_id].deposit
            rate = pool.versions[version].rate(band)
            if deposit is not None:  # a resale: at the deposit's price when lower
                kind = "resale"
                if deposit.price is not None:
                    rate = min(rate, Fraction(deposit.price))
            exact = Fraction(total, 3600) * rate * 100
            lines.append(
                Line(kind, lease_id, band, version, pool.versions[version].effective_from, pool.provider,
                     round_half_up(exact), hours=hours[key], seconds=total)
            )  # fmt: skip
        lines += self._reserved_lines(invoice)
        # The order the service hands lines to vouchers in: by kind, lease, band, then price version.
        return sorted(lines, key=lambda line: (line.kind, line.lease, line.band, line.effective_from))

    def reserve(self, *, lease: Lease, start: datetime, booked_end: datetime) -> None:
        """A reserved booking; the drafts of the months it bills are made with it."""
        self.reservations[lease.id] = Reservation(lease, start, booked_end)
        at = start
        while at < booked_end:
            month = month_of(at)
            self.invoices.setdefault((lease.buyer, month[0]), Invoice(lease.buyer, *month))
            at = month[1]

    def cancel_reservation(self, *, lease_id: str, now: datetime) -> None:
        reservation = self.reservations[lease_id]
        reservation.cancelled_at = now
        month = month_of(now)
        self.invoices.setdefault((reservation.lease.buyer, month[0]), Invoice(reservation.lease.buyer, *month))

    def _booked_seconds(self, reservation: Reservation, start: datetime, end: datetime) -> dict[str, int]:
        """Card-seconds booked in [start, end), by band."""
        seconds: dict[str, int] = defaultdict(int)
        at = start
        while at < end:
            following = min(at.replace(minute=0, second=0, microsecond=0) + HOUR, end)
            band = reservation.lease.pool.bands[at.astimezone(local_zone()).hour]
            seconds[band] += int((following - at).total_seconds()) * reservation.lease.cards
            at = following
        return seconds

    def _reserved_lines(self, invoice: Invoice) -> list[Line]:
        lines = []
        for lease_id, reservation in sorted(self.reservations.items()):
            lease = reservation.lease
            if lease.buyer != invoice.buyer:
                continue
            version = lease.pool.versions[lease.locked]
            if reservation.cancelled_at is not None:
                if not invoice.period_start <= reservation.cancelled_at < invoice.period_end:
                    continue
                booked = self._booked_seconds(reservation, reservation.start, reservation.booked_end)
                used = Decimal(sum(booked.values()))
                with localcontext(prec=50):
                    cost = sum(
                        (Decimal(seconds) * Decimal(version.base) * version.factors.get(band, Decimal(1)) / 3600
                         for band, seconds in booked.items()),
                        Decimal(0),
                    )  # fmt: skip
                    rate = (cost * self.cancel_fee_rate * 3600 / used).quantize(Decimal("1e-10"))
                    amount = round_half_up(Fraction(used * rate / 3600) * 100)
                lines.append(
                    Line("cancel_fee", lease_id, "", lease.locked, version.effective_from, lease.pool.provider, amount)
                )
                continue
            start = max(reservation.start, invoice.period_start)
            end = min(reservation.booked_end, invoice.period_end)
            for band, seconds in sorted(self._booked_seconds(reservation, start, end).items()):
                exact = Fraction(seconds, 3600) * version.rate(band) * 100
                lines.append(
                    Line("reserved", lease_id, band, lease.locked, version.effective_from, lease.pool.provider,
                         round_half_up(exact))
                )  # fmt: skip
        return lines

    def _redeem(self, invoice: Invoice, now: datetime) -> dict[str, int]:
        offered = [line for line in invoice.lines if line.kind == "usage" and line.amount > 0]
        purses = sorted(
            (
                v
                for v in self.vouchers.values()
                if v.buyer == invoice.buyer and v.status == "active" and v.valid_until > now - LATE_INVOICE_GRACE
            ),
            key=lambda v: (v.valid_until, v.valid_from, v.code),
        )
        owed: dict[str, int] = defaultdict(int)
        if not offered or not purses:
            return owed
        year = invoice.period_start.astimezone(local_zone()).year
        duration = HOUR // timedelta(microseconds=1)
        for line in offered:
            # A voucher pays its share of each hour of the line's usage inside its validity: the line's
            # fen split by the card-seconds of each hour (one rate), the hour a validity cuts prorated.
            hours = sorted(line.hours)
            parts = dict(zip(hours, split(line.amount, [Fraction(line.hours[hour]) for hour in hours]), strict=True))
            paid = 0
            for voucher in purses:
                program = voucher.program
                within = 0
                for hour, part in parts.items():
                    start, end = max(hour, voucher.valid_from), min(hour + HOUR, voucher.valid_until)
                    inside = max(0, (end - start) // timedelta(microseconds=1))
                    within += part if inside == duration else prorate(part, inside, duration) if inside else 0
                if within == 0 or (program.providers and line.provider not in program.providers):
                    continue
                wanted = share(within, program.coverage) - paid
                cap_key = (invoice.buyer, program.issuer, year)
                amount = min(wanted, voucher.remaining, max(0, program.yearly_cap - self.cap_used[cap_key]))
                if amount <= 0:
                    continue
                voucher.remaining -= amount
                self.cap_used[cap_key] += amount
                paid += amount
                invoice.redemptions.append((voucher, amount, year))
                owed[program.issuer] += amount
            line.voucher_amount = paid
        for voucher in purses:
            if voucher.remaining == 0:
                voucher.status = "exhausted"
        return owed

    # --- void and refunds ---------------------------------------------------------------

    def void(self, *, key: tuple[str, datetime], now: datetime) -> None:
        invoice = self.invoices[key]
        if invoice.status not in ("finalized", "paid", "uncollectible"):
            raise Refused("invoice_not_voidable")
        if any(line.kind == "resale" for line in invoice.lines):
            raise Refused("resale_credited")  # its depositors were credited, credit they may have spent
        self.ledger[("buyer_receivable", invoice.buyer)] -= invoice.amount_due
        self.ledger[("vat_payable", None)] += invoice.tax
        self.ledger[("platform_revenue", None)] -= invoice.tax
        for provider, (gross, commission) in invoice.by_provider.items():
            self.ledger[("provider_payable", provider)] += gross - commission
            self.ledger[("platform_revenue", None)] += commission
            self.statements[(provider, invoice.period_start)] -= gross - commission
        if invoice.voucher_credit:
            for voucher, _, _ in invoice.redemptions:  # lapsed vouchers end before anything returns
                if voucher.live and voucher.valid_until <= now - LATE_INVOICE_GRACE:
                    self._end(voucher, "expired")
            for voucher, amount, year in invoice.redemptions:
                self.ledger[("voucher_receivable", voucher.program.issuer)] -= amount
                self.cap_used[(invoice.buyer, voucher.program.issuer, year)] -= amount
                if voucher.live:
                    voucher.remaining += amount
                    voucher.status = "active"
                else:
                    voucher.released += amount
                    voucher.program.committed -= amount
        for grant, part in invoice.draws:
            grant.remaining += part
            self.ledger[grant.account] -= part
        for grant, _ in invoice.draws:  # a grant that expired meanwhile expires again at once
            if grant.expires_at is not None and grant.expires_at <= now:
                self._expire(grant)
        invoice.status = "void"
        self._give_back(invoice)

    def _give_back(self, invoice: Invoice) -> None:
        """What the invoice received beyond what it keeps (all of a void one) is recorded to go
        back: card payments first, the latest first, refunded through Stripe later; then bank
        transfers, refunded at once by the operator."""
        excess = invoice.amount_paid - invoice.amount_refunded - (0 if invoice.status == "void" else invoice.amount_due)
        if excess <= 0:
            return
        invoice.amount_refunded += excess
        for payment in reversed(invoice.card_payments):
            part = min(excess, payment[0] - payment[1])
            payment[1] += part
            excess -= part
        part = min(excess, invoice.transfers - invoice.transfers_refunded)
        invoice.transfers_refunded += part
        self.ledger[("buyer_receivable", invoice.buyer)] += part
        self.ledger[("bank_transfer_clearing", None)] -= part

    def refund(self, *, key: tuple[str, datetime]) -> None:
        """The invoice's card refunds due are made through Stripe."""
        invoice = self.invoices[key]
        for payment in invoice.card_payments:
            due = payment[1] - payment[2]
            if due:
                payment[2] += due
                self.ledger[("buyer_receivable", invoice.buyer)] += due
                self.ledger[("stripe_clearing", None)] -= due

    def card_charged(self, *, key: tuple[str, datetime], amount: int) -> None:
        """A card charge Stripe made is booked, whatever became of the invoice; what it does not
        keep goes back."""
        invoice = self.invoices[key]
        self.ledger[("stripe_clearing", None)] += amount
        invoice.card_payments.append([amount, 0, 0])
        self._paid(invoice, amount)
        self._give_back(invoice)

    # --- payments -----------------------------------------------------------------------

    def collect(self, *, key: tuple[str, datetime], outcome: str | None = None) -> str | None:
        """A card collection; ``outcome`` forces it (a webhook decides), else the buyer's card does."""
        invoice = self.invoices[key]
        if invoice.status != "finalized" or invoice.amount_paid - invoice.amount_refunded >= invoice.amount_due:
            return None
        invoice.attempts += 1
        amount = invoice.amount_due - invoice.amount_paid + invoice.amount_refunded
        card = outcome or self.cards.get(invoice.buyer)
        if card == "good":
            self.card_charged(key=key, amount=amount)
            return "succeeded"
        if invoice.attempts > self.dunning_steps:
            invoice.status = "uncollectible"
            self.blocked.add(invoice.buyer)
        return "failed"

    def pay_now(self, *, key: tuple[str, datetime]) -> str | None:
        """The buyer pays with a new good card; an uncollectible invoice is collectible again."""
        invoice = self.invoices[key]
        if invoice.status not in ("finalized", "uncollectible"):
            raise Refused("invoice_not_payable")
        self.cards[invoice.buyer] = "good"
        invoice.status = "finalized"
        return self.collect(key=key)

    def bank_transfer(self, *, key: tuple[str, datetime], amount: int) -> None:
        invoice = self.invoices[key]
        if invoice.status not in ("finalized", "uncollectible"):
            raise Refused("invoice_not_payable")
        if not 0 < amount <= invoice.amount_due - invoice.amount_paid + invoice.amount_refunded:
            raise Refused("invalid_amount")
        self.ledger[("bank_transfer_clearing", None)] += amount
        invoice.transfers += amount
        self._paid(invoice, amount)

    def _paid(self, invoice: Invoice, amount: int) -> None:
        self.ledger[("buyer_receivable", invoice.buyer)] -= amount
        invoice.amount_paid += amount
        kept = invoice.amount_paid - invoice.amount_refunded
        if kept >= invoice.amount_due and invoice.status in ("finalized", "uncollectible"):
            invoice.status = "paid"
        if not any(i.status == "uncollectible" for i in self.invoices.values() if i.buyer == invoice.buyer):
            self.blocked.discard(invoice.buyer)

    # --- vouchers -----------------------------------------------------------------------

    def issue(
        self, *, program_id: str, buyer: str, face_value: int, valid_until: datetime | None, now: datetime
    ) -> tuple[datetime, datetime]:
        """Check a voucher request; returns its validity. The caller adds the voucher with its id and code."""
        program = self.programs[program_id]
        if not program.open:
            raise Refused("program_not_open")
        if program.valid_until <= now:
            raise Refused("program_ended")
        starts = max(now, program.valid_from)
        if valid_until is not None and not starts < valid_until <= program.valid_until:
            raise Refused("vouchers_refused")
        if face_value > program.budget_left:
            raise Refused("budget_exceeded")
        program.committed += face_value
        return starts, valid_until or program.valid_until

    def revoke(self, *, voucher_id: str) -> None:
        voucher = self.vouchers[voucher_id]
        if not voucher.live:
            raise Refused("voucher_ended")
        self._end(voucher, "revoked")

    def expire(self, *, now: datetime) -> None:
        for voucher in self.vouchers.values():
            if voucher.live and voucher.valid_until <= now - LATE_INVOICE_GRACE:
                self._end(voucher, "expired")
        for program in self.programs.values():
            if program.open and program.valid_until <= now:
                program.open = False

    def _end(self, voucher: Voucher, status: str) -> None:
        voucher.program.committed -= voucher.remaining
        voucher.released += voucher.remaining
        voucher.remaining = 0
        voucher.status = status

    # --- the compute bank -----------------------------------------------------------------

    def grant(self, grant: Grant, *, offset: str | None = None) -> None:
        grant.remaining = grant.amount
        self.grants[grant.id] = grant
        self.ledger[(offset or ("stripe_clearing" if grant.paid else "promotion_expense"), None)] += grant.amount
        self.ledger[grant.account] -= grant.amount

    def _draw(self, invoice: Invoice, owed: int, now: datetime) -> int:
        """The bank pays what vouchers left, soonest-expiring grant first."""
        spendable = [
            grant
            for grant in self.grants.values()
            if grant.buyer == invoice.buyer
            and grant.remaining > 0
            and (grant.expires_at is None or grant.expires_at > now)
        ]
        left = owed
        for grant in sorted(spendable, key=lambda grant: grant.burn_order):
            part = min(grant.remaining, left)
            if not part:
                break
            grant.remaining -= part
            left -= part
            invoice.draws.append((grant, part))
            self.ledger[grant.account] += part
        drawn = owed - left
        self.ledger[("buyer_receivable", invoice.buyer)] -= drawn
        return drawn

    def expire_grants(self, *, now: datetime) -> None:
        for grant in self.grants.values():
            if grant.expires_at is not None and grant.expires_at <= now:
                self._expire(grant)

    def _expire(self, grant: Grant) -> None:
        self.ledger[grant.account] += grant.remaining
        self.ledger[("breakage", None)] -= grant.remaining
        grant.remaining = 0

    # --- holds (prepaid buyers) -----------------------------------------------------------

    def available(self, *, buyer: str, now: datetime) -> int:
        """Credit not promised: the balance less the usage no finalized invoice billed (rated as
        lines per lease, price version and band) and less what holds still reserve beyond it."""
        balance = sum(
            grant.remaining
            for grant in self.grants.values()
            if grant.buyer == buyer and (grant.expires_at is None or grant.expires_at > now)
        )
        groups: dict[tuple[str, str, int, str], int] = defaultdict(int)
        for (lease_id, hour), usage in self.usage.items():
            lease = self.leases[lease_id]
            if lease.buyer != buyer:
                continue
            band = lease.pool.bands[hour.astimezone(local_zone()).hour]
            for version, unbilled in usage.unbilled(lease).items():
                groups[("usage" if hour >= now else "adjustment", lease_id, version, band)] += unbilled
        pending: dict[str, int] = defaultdict(int)
        for (_, lease_id, version, band), seconds in groups.items():
            rate = self.leases[lease_id].pool.versions[version].rate(band)
            pending[lease_id] += round_half_up(Fraction(seconds, 3600) * rate * 100)
        billed: dict[str, int] = defaultdict(int)
        for invoice in self.invoices.values():
            if invoice.status in ("finalized", "paid", "uncollectible"):
                for line in invoice.lines:
                    billed[line.lease] += line.amount
        held = sum(
            max(0, amount - billed[lease_id] - pending[lease_id])
            for lease_id, (amount, active) in self.holds.items()
            if active
        )
        return balance - sum(pending.values()) - held

    def lease_starts(self, *, lease: Lease, needed: int, now: datetime) -> None:
        """A prepaid buyer's lease starts if its available credit covers the expected cost, held."""
        if self.available(buyer=lease.buyer, now=now) < needed:
            raise Refused("insufficient_funds")
        self.leases[lease.id] = lease
        self.holds[lease.id] = [needed, True]

    # --- deposits (the compute bank's reserved capacity) ----------------------------------

    def deposit(self, deposit: Deposit) -> None:
        self.deposits[deposit.id] = deposit

    def resell(self, *, deposit_id: str, lease: Lease, start: datetime, end: datetime) -> None:
        """An on-demand lease placed on the deposit's cards, if they are free over its window."""
        deposit = self.deposits[deposit_id]
        if deposit.free(start, end) < lease.cards:
            raise Refused("pool_rejected")
        deposit.resold.append((start, end, lease.cards))
        lease.deposit = deposit
        self.leases[lease.id] = lease

    def withdraw(self, *, deposit_id: str, now: datetime) -> datetime:
        """The deposit's end moves back to the next whole hour, or the end of its latest resale."""
        deposit = self.deposits[deposit_id]
        if deposit.withdrawn:
            raise Refused("deposit_withdrawn")
        floor = now.replace(minute=0, second=0, microsecond=0)
        next_hour = floor if floor == now else floor + HOUR
        sold_until = max((end for _, end, _ in deposit.resold), default=deposit.start)
        deposit.end = min(max(next_hour, sold_until, deposit.start), deposit.end)
        deposit.withdrawn = True
        return deposit.end
