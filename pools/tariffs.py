"""Time-of-use arithmetic: hubs' electricity bands and pools' prices by local hour.

Pure functions over plain values, shared by pricing, offers, the dispatcher and
rating. Every hub is in China, so every band is read in BILLING_TIME_ZONE
(Asia/Shanghai); times are stored in UTC.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from core.timezones import local_zone

RATE_PLACES = Decimal("0.0000000001")  # rates carry up to 10 places
FACTOR_PLACES = Decimal("0.000001")
MIN_FACTOR = Decimal("0.1")
HOURS = range(24)


def local_hour(at: datetime) -> int:
    return at.astimezone(local_zone()).hour


def hour_bands(tariff: Mapping[str, Any]) -> list[str]:
    """The band name of each local hour 0..23, from ``{"bands": [{"band", "hours": [[a, b]]}]}``."""
    bands: list[str | None] = [None] * 24
    for band in tariff["bands"]:
        for start, end in band["hours"]:
            for hour in range(start, end):
                bands[hour] = band["band"]
    missing = [hour for hour in HOURS if bands[hour] is None]
    if missing:
        raise ValueError(f"tariff leaves hours {missing} without a band")
    return [band for band in bands if band is not None]


def band_prices(tariff: Mapping[str, Any]) -> dict[str, Decimal]:
    return {band["band"]: Decimal(str(band["price"])) for band in tariff["bands"]}


def hourly_kwh_prices(tariff: Mapping[str, Any]) -> tuple[float, ...]:
    """The electricity price of each local hour 0..23, yuan per kWh, as floats (the dispatcher's)."""
    prices = {band: float(price) for band, price in band_prices(tariff).items()}
    return tuple(prices[band] for band in hour_bands(tariff))


def default_factors(
    *, tariff: Mapping[str, Any], base_price: Decimal, power_watts: int, pue: Decimal
) -> dict[str, Decimal]:
    """Pass the hub's electricity tariff through: each band's price differs from the
    flat-hour ``base_price`` by exactly the electricity cost difference of one card
    (its power times the pool's PUE) in that band.
    """
    prices = band_prices(tariff)
    reference = prices.get("flat", sum(prices.values(), Decimal(0)) / len(prices))
    kw = Decimal(power_watts) / 1000
    return {
        band: max(MIN_FACTOR, 1 + (price - reference) * kw * pue / base_price).quantize(
            FACTOR_PLACES, rounding=ROUND_HALF_UP
        )
        for band, price in prices.items()
    }


def hour_prices(*, base_price: Decimal, factors: Mapping[str, Decimal], bands: Sequence[str]) -> list[Decimal]:
    """The price per card-hour in each local hour 0..23."""
    return [
        (base_price * Decimal(factors.get(band, 1))).quantize(RATE_PLACES, rounding=ROUND_HALF_UP) for band in bands
    ]


@dataclass(frozen=True)
class PriceWindow:
    start_at: datetime
    end_at: datetime
    price_per_card_hour: Decimal


def next_cheaper_window(prices: Sequence[Decimal], at: datetime) -> PriceWindow | None:
    """The next run of hours, within the coming day, priced below the current hour."""
    zone = local_zone()
    local = at.astimezone(zone)
    hour_start = local.replace(minute=0, second=0, microsecond=0)
    current = prices[local.hour]
    for offset in range(1, 24):
        price = prices[(local.hour + offset) % 24]
        if price < current:
            length = 1
            while length < 24 - offset and prices[(local.hour + offset + length) % 24] == price:
                length += 1
            start = hour_start + timedelta(hours=offset)
            return PriceWindow(
                start_at=start.astimezone(at.tzinfo),
                end_at=(start + timedelta(hours=length)).astimezone(at.tzinfo),
                price_per_card_hour=price,
            )
    return None
