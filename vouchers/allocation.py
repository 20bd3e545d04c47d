"""How vouchers pay an invoice's lines: one pure function over plain values.

Redemption runs it over vouchers and yearly caps locked for update and writes
what it decides; the estimate in quotes runs it over the same rows read plainly
and writes nothing. The rules:

- a line of a provider related to the buyer gets nothing from any voucher;
- a voucher pays for the part of a line whose usage falls in the voucher's
  validity, hour by hour (``ChargeLine.hours``; an hour the validity starts or
  ends in, or a line without hours, is prorated by time with ``split``), if the
  program allows the line's provider, hub, GPU model and workload;
- it pays ``coverage_share`` of that part (``share``: the voucher's part and
  the buyer's part add up to it), limited by the voucher's remaining value and
  by what is left of the company's yearly cap for the issuer, for the calendar
  year (Asia/Shanghai) in which the usage started;
- vouchers are tried soonest-expiring first, and a line never gets more than
  the largest share any one of its programs pays: a second voucher only tops
  up what the first could not pay (no double subsidy).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from core.money import format_yuan, share, split
from core.timezones import local_zone
from vouchers.charges import HOUR, ChargeLine, Ineligibility, LineOutcome

CapKey = tuple[str, int]  # (issuer id, calendar year)
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class Purse:
    """A voucher as allocation sees it; ``remaining`` goes down as it pays."""

    id: str
    code: str
    program_id: str
    program_name: str
    issuer_id: str
    coverage_share: Decimal
    yearly_cap: int
    remaining: int
    valid_from: datetime
    valid_until: datetime
    providers: frozenset[str]  # empty: any
    hubs: frozenset[str]
    gpu_models: frozenset[str]
    workloads: frozenset[str]


@dataclass(frozen=True)
class Grant:
    line: ChargeLine
    purse: Purse
    amount: int
    cap_year: int


def cap_year(at: datetime) -> int:
    """The calendar year, in the billing time zone, whose yearly cap usage at ``at`` counts against."""
    return at.astimezone(local_zone()).year


def _within(line: ChargeLine, purse: Purse) -> int:
    """The fen of ``line`` for usage inside the voucher's validity: hour by hour when the line
    says when its usage happened, else spread evenly over its period."""
    if line.hours:
        return sum(_inside(amount, hour, hour + HOUR, purse) for hour, amount in line.hours)
    return _inside(line.amount, line.period_start, line.period_end, purse)


def _inside(amount: int, start: datetime, end: datetime, purse: Purse) -> int:
    """The fen of ``amount``, used evenly over [start, end), that falls inside the voucher's validity."""
    duration = (end - start) // _MICROSECOND
    if duration <= 0:  # usage at one instant
        return amount if purse.valid_from <= start < purse.valid_until else 0
    inside = max(0, (min(end, purse.valid_until) - max(start, purse.valid_from)) // _MICROSECOND)
    if inside in (0, duration):
        return amount if inside else 0
    return split(amount, [inside, duration - inside])[0]


def _refusal(line: ChargeLine, purse: Purse) -> tuple[str, str] | None:
    program = f"program {purse.program_name!r}"
    if purse.providers and line.provider_id not in purse.providers:
        return "provider_not_approved", f"The provider is not on the approved list of {program}."
    if purse.hubs and line.hub not in purse.hubs:
        return "hub_not_eligible", f"Hub {line.hub} is not eligible under {program}."
    if purse.gpu_models and line.gpu_model not in purse.gpu_models:
        return "gpu_model_not_eligible", f"GPU model {line.gpu_model} is not eligible under {program}."
    if purse.workloads and line.workload not in purse.workloads:
        return "workload_not_eligible", f"Workload {line.workload} is not eligible under {program}."
    return None


def _why(code: str, message: str, purse: Purse) -> Ineligibility:
    return Ineligibility(code=code, message=message, voucher_id=purse.id, voucher_code=purse.code)


RELATED_PARTY = (
    "The provider is in the buyer's group (an ancestor, a descendant, under a common parent, "
    "or the same unified social credit code); "
    "vouchers never pay a related party."
)


def _unpaid(line: ChargeLine, code: str, message: str) -> LineOutcome:
    reason = Ineligibility(code=code, message=message)
    return LineOutcome(line_ref=line.line_ref, amount=line.amount, voucher_amount=0, reasons=(reason,))


def allocate(
    *,
    lines: Iterable[ChargeLine],
    purses: Sequence[Purse],
    cap_used: dict[CapKey, int],
    related_providers: frozenset[str],
) -> tuple[list[LineOutcome], list[Grant]]:
    """Decide what each purse pays of each line. Lowers ``purse.remaining`` and raises
    ``cap_used`` as it goes; returns each line's outcome and the grants to record."""
    soonest_first = sorted(purses, key=lambda purse: (purse.valid_until, purse.valid_from, purse.code))
    outcomes: list[LineOutcome] = []
    grants: list[Grant] = []
    for line in lines:
        if line.amount == 0:
            outcomes.append(LineOutcome(line_ref=line.line_ref, amount=0, voucher_amount=0))
            continue
        if line.provider_id in related_providers:
            outcomes.append(_unpaid(line, "related_party", RELATED_PARTY))
            continue
        if not soonest_first:
            outcomes.append(_unpaid(line, "no_active_voucher", "The buyer has no active voucher."))
            continue

        year = cap_year(line.period_start)
        paid, best_share, reasons = 0, 0, []
        for purse in soonest_first:
            within = _within(line, purse)
            if within == 0:
                reasons.append(
                    _why("outside_validity", f"The usage lies outside voucher {purse.code}'s validity.", purse)
                )
                continue
            refusal = _refusal(line, purse)
            if refusal is not None:
                reasons.append(_why(*refusal, purse))
                continue
            target, _ = share(within, purse.coverage_share)
            best_share = max(best_share, target)
            wanted = target - paid
            if wanted <= 0:
                continue
            key = (purse.issuer_id, year)
            cap_left = max(0, purse.yearly_cap - cap_used.get(key, 0))
            amount = min(wanted, purse.remaining, cap_left)
            if amount < wanted:
                if cap_left < min(wanted, purse.remaining):
                    reasons.append(
                        _why(
                            "yearly_cap_reached",
                            f"The company reached the yearly cap of {format_yuan(purse.yearly_cap)} for {year} "
                            "across the issuer's programs.",
                            purse,
                        )
                    )
                else:
                    reasons.append(
                        _why(
                            "voucher_exhausted",
                            f"Voucher {purse.code} has {format_yuan(purse.remaining)} left.",
                            purse,
                        )
                    )
            if amount <= 0:
                continue
            purse.remaining -= amount
            cap_used[key] = cap_used.get(key, 0) + amount
            paid += amount
            grants.append(Grant(line=line, purse=purse, amount=amount, cap_year=year))
        # A line that got the full share of its best program needs no excuse; the same
        # excuse for two vouchers (one issuer's cap) is given once.
        unique = {(reason.code, reason.message): reason for reason in reversed(reasons)}
        kept = () if best_share and paid >= best_share else tuple(reversed(unique.values()))
        outcomes.append(LineOutcome(line_ref=line.line_ref, amount=line.amount, voucher_amount=paid, reasons=kept))
    return outcomes, grants
