from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.money import fen_to_yuan, format_yuan, round_to_fen, share, shown_price, split, yuan_to_fen

amounts = st.integers(min_value=-(10**13), max_value=10**13)
weights = st.lists(
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False), min_size=1, max_size=20
).filter(lambda ws: sum(ws) > 0)
ratios = st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [
        ("0.005", 1),
        ("0.0049999", 0),
        ("1.115", 112),
        ("2.675", 268),
        ("-0.005", -1),
        ("0.0009722222", 0),
        ("12345.6750", 1234568),
    ],
)
def test_round_to_fen_rounds_half_up_away_from_zero(yuan: str, fen: int) -> None:
    assert round_to_fen(Decimal(yuan)) == fen


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_round_to_fen_refuses_non_finite_amounts(bad: str) -> None:
    with pytest.raises(ValueError):
        round_to_fen(Decimal(bad))


def test_yuan_to_fen_refuses_fractions_of_a_fen() -> None:
    assert yuan_to_fen(Decimal("15000.00")) == 1_500_000
    with pytest.raises(ValueError, match="more than two decimal places"):
        yuan_to_fen(Decimal("0.001"))


@given(amounts)
def test_fen_survive_a_round_trip_through_yuan(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen
    assert Decimal(format_yuan(fen)) * 100 == fen


@given(st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, allow_infinity=False))
def test_rounding_is_never_off_by_more_than_half_a_fen(yuan: Decimal) -> None:
    assert abs(Decimal(round_to_fen(yuan)) / 100 - yuan) <= Decimal("0.005")


@given(amounts, weights)
def test_split_parts_always_add_up_to_the_whole(total: int, ws: list[Decimal]) -> None:
    parts = split(total, ws)

    assert sum(parts) == total
    assert len(parts) == len(ws)


@given(amounts, weights)
def test_split_gives_each_part_its_share_within_one_fen(total: int, ws: list[Decimal]) -> None:
    parts = split(total, ws)
    weight_sum = sum(ws)

    for part, weight in zip(parts, ws, strict=True):
        assert abs(Decimal(part) - Decimal(total) * weight / weight_sum) < 1


@given(st.integers(min_value=0, max_value=10**12), weights)
def test_split_of_a_positive_amount_has_no_negative_part(total: int, ws: list[Decimal]) -> None:
    assert all(part >= 0 for part in split(total, ws))


def test_split_is_deterministic_on_ties() -> None:
    assert split(100, [1, 1, 1]) == [34, 33, 33]
    assert split(-100, [1, 1, 1]) == [-34, -33, -33]


@pytest.mark.parametrize("bad", [[], [0, 0], [Decimal("-1"), 2], [Decimal("NaN")]])
def test_split_refuses_meaningless_weights(bad: list[Decimal]) -> None:
    with pytest.raises(ValueError):
        split(100, bad)


@given(amounts, ratios)
def test_share_and_rest_add_up_to_the_whole(total: int, ratio: Decimal) -> None:
    part, rest = share(total, ratio)

    assert part + rest == total
    assert abs(Decimal(part) - Decimal(total) * ratio) <= Decimal("0.5")


def test_share_rounds_half_up() -> None:
    assert share(1001, Decimal("0.2")) == (200, 801)
    assert share(1005, Decimal("0.5")) == (503, 502)


@pytest.mark.parametrize("bad", ["1.01", "-0.1", "NaN"])
def test_share_refuses_a_ratio_outside_zero_to_one(bad: str) -> None:
    with pytest.raises(ValueError):
        share(100, Decimal(bad))


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        ("12.3456500000", "12.3457"),  # half up, where half even would give 12.3456
        ("12.3456499999", "12.3456"),
        ("0.0000500000", "0.0001"),
        ("0.0009722222", "0.0010"),
        ("15", "15.0000"),
        ("99999.99995", "100000.0000"),
    ],
)
def test_shown_price_has_four_places_rounded_half_up(rate: str, shown: str) -> None:
    assert f"{shown_price(Decimal(rate)):f}" == shown


def test_shown_price_takes_the_strings_and_floats_rates_are_kept_as() -> None:
    assert shown_price("1.23455") == Decimal("1.2346")
    assert shown_price(12.34565) == Decimal("12.3457")
