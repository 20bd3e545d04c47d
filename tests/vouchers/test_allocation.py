"""The allocation rules as a pure function, for any amounts."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core.money import share
from tests.vouchers.factories import MARCH, YEAR_END, YEAR_START
from vouchers.allocation import Purse, allocate
from vouchers.charges import ChargeLine

shares = st.integers(min_value=1, max_value=10_000).map(lambda n: Decimal(n) / 10_000)
fen = st.integers(min_value=0, max_value=10**12)


def _purse(code: str, coverage_share: Decimal, remaining: int, yearly_cap: int) -> Purse:
    return Purse(
        id=code,
        code=code,
        program_id=f"program-{code}",
        program_name=code,
        issuer_id="issuer",
        coverage_share=coverage_share,
        yearly_cap=yearly_cap,
        remaining=remaining,
        valid_from=YEAR_START,
        valid_until=YEAR_END,
        providers=frozenset(),
        hubs=frozenset(),
        gpu_models=frozenset(),
        workloads=frozenset(),
    )


def _line(ref: str, amount: int) -> ChargeLine:
    return ChargeLine(ref, amount, "lease", "pool", "provider", "ningxia", "H100-80G", "training", *MARCH)


@given(
    amounts=st.lists(fen, min_size=1, max_size=5),
    first=shares,
    second=shares,
    remaining=st.tuples(st.integers(min_value=1, max_value=10**11), st.integers(min_value=1, max_value=10**11)),
    cap=st.integers(min_value=1, max_value=10**11),
    used=st.integers(min_value=0, max_value=10**11),
)
def test_vouchers_never_pay_more_than_the_share_the_value_or_the_cap(
    amounts, first, second, remaining, cap, used
) -> None:  # type: ignore[no-untyped-def]
    purses = [_purse("A", first, remaining[0], cap), _purse("B", second, remaining[1], cap)]
    cap_used = {("issuer", 2026): used}
    lines = [_line(str(index), amount) for index, amount in enumerate(amounts)]

    outcomes, grants = allocate(lines=lines, purses=purses, cap_used=cap_used, related_providers=frozenset())

    for line, outcome in zip(lines, outcomes, strict=True):
        assert outcome.voucher_amount + outcome.buyer_amount == line.amount
        assert 0 <= outcome.voucher_amount <= share(line.amount, max(first, second))[0]
    for purse, start in zip(purses, remaining, strict=True):
        assert sum(grant.amount for grant in grants if grant.purse is purse) == start - purse.remaining >= 0
    assert cap_used[("issuer", 2026)] - used == sum(grant.amount for grant in grants) <= max(0, cap - used)


def test_a_voucher_pays_its_share_of_the_hours_of_a_line_inside_its_validity_and_prorates_the_hour_it_starts_in() -> (
    None
):
    # given a line used in three hours, and a 30% voucher valid from a quarter into the second hour
    start = MARCH[0] + timedelta(days=6)
    hours = ((start, 400), (start + timedelta(hours=1), 400), (start + timedelta(hours=2), 200))
    line = replace(_line("1", 1_000), hours=hours)
    purse = replace(_purse("A", Decimal("0.3"), 10**9, 10**9), valid_from=start + timedelta(hours=1, minutes=15))

    (outcome,), _ = allocate(lines=[line], purses=[purse], cap_used={}, related_providers=frozenset())

    # then it pays 30% of three quarters of the second hour and all of the third
    assert outcome.voucher_amount == share(300 + 200, Decimal("0.3"))[0]
