"""The compute price index's arithmetic: card-hour prices weighted by free cards, per hub, region
and the nation. Pure functions over plain values, shared by the hourly snapshot, the index's
daily series and ``seed_national``'s history."""

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

# Each quantile is the lowest price at which at least this share of the free cards is offered.
QUANTILES = (("p10", Decimal("0.1")), ("median", Decimal("0.5")), ("p90", Decimal("0.9")))
NATIONAL = "national"

Offers = Mapping[str, Iterable[tuple[Decimal, int]]]  # hub -> (price, free cards) pairs


def area_index(pairs: Iterable[tuple[Decimal, int]]) -> dict[str, Any] | None:
    """p10, median and p90 of these (price, free cards) pairs, and the cards; None without cards."""
    merged: dict[Decimal, int] = {}
    for price, cards in pairs:
        merged[price] = merged.get(price, 0) + cards
    total = sum(merged.values())
    if not total:
        return None
    index: dict[str, Any] = {"cards": total}
    running, wanted = 0, list(QUANTILES)
    for price in sorted(merged):
        running += merged[price]
        while wanted and running >= wanted[0][1] * total:
            index[wanted.pop(0)[0]] = str(price)
    return index


def areas_of(hub: str, regions: Mapping[str, str]) -> tuple[str, str, str]:
    """The areas a hub's offers count in: the hub, its region (east or west) and the nation."""
    return hub, regions[hub], NATIONAL


def snapshot_index(offers: Offers, regions: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The index of every hub, region and the nation with offers, from one hour's offers by hub."""
    by_area: dict[str, list[tuple[Decimal, int]]] = {}
    for hub, pairs in offers.items():
        for area in areas_of(hub, regions):
            by_area.setdefault(area, []).extend(pairs)
    return {area: index for area, pairs in sorted(by_area.items()) if (index := area_index(pairs)) is not None}


def offers_json(offers: Offers) -> dict[str, list[list[Any]]]:
    """The offers as stored: per hub, [price, free cards] by ascending price."""
    return {hub: [[str(price), cards] for price, cards in sorted(pairs)] for hub, pairs in sorted(offers.items())}


def offers_from_json(stored: Mapping[str, list[list[Any]]]) -> dict[str, list[tuple[Decimal, int]]]:
    return {hub: [(Decimal(price), cards) for price, cards in pairs] for hub, pairs in stored.items()}
