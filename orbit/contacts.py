"""Contact windows between satellites and ground stations, computed from the elements with skyfield.

Only SGP4 and the Earth's shape are needed: skyfield's built-in timescale (leap seconds and
delta T shipped with it) and no ephemeris file, so nothing is downloaded at run time. A day's
passes of a satellite over a station are computed once per process and kept.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from skyfield.api import EarthSatellite, Timescale, load, wgs84

from orbit.reference_data import GROUND_STATIONS, MIN_ELEVATION_DEGREES

# Passes at 500 km last under 15 minutes: a day computed with this margin on each side
# holds every pass that rises in it whole.
_MARGIN = timedelta(minutes=20)
_STATIONS = {station["code"]: station for station in GROUND_STATIONS}


@dataclass(frozen=True, slots=True)
class Contact:
    station: str
    start: datetime
    end: datetime
    max_elevation: float  # degrees

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class Transfer:
    """Data brought down over one or more passes: when it is all down, and the passes used."""

    finished_at: datetime
    windows: tuple[tuple[Contact, datetime, datetime, Decimal], ...]  # (pass, from, until, GB)


@lru_cache(maxsize=1)
def timescale() -> Timescale:
    return load.timescale(builtin=True)


@lru_cache(maxsize=64)
def _satellite(line1: str, line2: str) -> EarthSatellite:
    return EarthSatellite(line1, line2, None, timescale())


@lru_cache(maxsize=8192)
def _day_passes(line1: str, line2: str, station_code: str, day: datetime) -> tuple[Contact, ...]:
    """The passes over the station that rise on this UTC day."""
    ts, satellite, station = timescale(), _satellite(line1, line2), _STATIONS[station_code]
    site = wgs84.latlon(float(station["lat"]), float(station["lon"]), elevation_m=station["elevation_m"])
    times, events = satellite.find_events(
        site,
        ts.from_datetime(day - _MARGIN),
        ts.from_datetime(day + timedelta(days=1) + _MARGIN),
        altitude_degrees=MIN_ELEVATION_DEGREES,
    )
    passes: list[Contact] = []
    rise: datetime | None = None
    peak = 0.0
    for time, event in zip(times, events, strict=True):
        at = time.utc_datetime()
        if event == 0:
            rise, peak = at, 0.0
        elif event == 1 and rise is not None:
            peak = max(peak, (satellite - site).at(time).altaz()[0].degrees)
        elif event == 2 and rise is not None:
            if day <= rise < day + timedelta(days=1):
                passes.append(Contact(station_code, rise, at, round(float(peak), 2)))
            rise = None
    return tuple(passes)


def contacts(line1: str, line2: str, *, start: datetime, end: datetime) -> list[Contact]:
    """Every pass over every ground station that overlaps [start, end), by start time."""
    day = (start - _MARGIN).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    found: list[Contact] = []
    while day < end:
        for code in _STATIONS:
            found.extend(c for c in _day_passes(line1, line2, code, day) if c.end > start and c.start < end)
        day += timedelta(days=1)
    return sorted(found, key=lambda c: (c.start, c.station))


def transfer_time(size_gb: Decimal, mbps: int) -> timedelta:
    return timedelta(seconds=float(size_gb) * 8000 / mbps)


def downlink(
    line1: str, line2: str, *, start: datetime, size_gb: Decimal, mbps: int, horizon: timedelta
) -> Transfer | None:
    """Bring ``size_gb`` down from ``start`` over as many passes as it takes (one link: passes that
    overlap count once), or None if it is not all down within ``horizon``."""
    left = float(size_gb) * 8000 / mbps  # seconds of contact needed
    cursor = start
    used: list[tuple[Contact, datetime, datetime, Decimal]] = []
    for contact in contacts(line1, line2, start=start, end=start + horizon):
        begin = max(contact.start, cursor)
        if contact.end <= begin:
            continue
        until = min(contact.end, begin + timedelta(seconds=left))
        seconds = (until - begin).total_seconds()
        used.append((contact, begin, until, Decimal(seconds * mbps / 8000).quantize(Decimal("0.001"))))
        left -= seconds
        cursor = until
        if left <= 1e-6:
            return Transfer(until, tuple(used))
    return None
