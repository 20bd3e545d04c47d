"""Contact windows, computed by skyfield from the generated elements, against an independent
computation in this test: SGP4 (the sgp4 package directly), TEME rotated to Earth-fixed by
GMST, and a brute-force elevation scan every 5 seconds."""

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sgp4.api import Satrec, jday

from orbit.contacts import contacts, downlink
from orbit.reference_data import GROUND_STATIONS, MIN_ELEVATION_DEGREES, TLES

EPOCH_WINDOW = (datetime(2026, 3, 18, tzinfo=UTC), datetime(2026, 3, 18, 12, tzinfo=UTC))
STEP = timedelta(seconds=5)
WGS84_A, WGS84_F = 6378.137, 1 / 298.257223563


def _station_ecef(lat: float, lon: float, height_km: float) -> tuple[float, float, float]:
    phi, lam = math.radians(lat), math.radians(lon)
    e2 = WGS84_F * (2 - WGS84_F)
    n = WGS84_A / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    return (
        (n + height_km) * math.cos(phi) * math.cos(lam),
        (n + height_km) * math.cos(phi) * math.sin(lam),
        (n * (1 - e2) + height_km) * math.sin(phi),
    )


def _gmst(jd_ut1: float) -> float:
    """Greenwich mean sidereal time (IAU 1982), radians."""
    t = (jd_ut1 - 2451545.0) / 36525.0
    seconds = 67310.54841 + (876600 * 3600 + 8640184.812866) * t + 0.093104 * t * t - 6.2e-6 * t**3
    return math.radians((seconds % 86400) / 240.0)


def _elevation(sat: Satrec, station: dict, at: datetime) -> float:
    jd, fr = jday(at.year, at.month, at.day, at.hour, at.minute, at.second + at.microsecond / 1e6)
    error, r, _ = sat.sgp4(jd, fr)
    assert error == 0
    theta = _gmst(jd + fr)
    x = r[0] * math.cos(theta) + r[1] * math.sin(theta)
    y = -r[0] * math.sin(theta) + r[1] * math.cos(theta)
    sx, sy, sz = _station_ecef(float(station["lat"]), float(station["lon"]), station["elevation_m"] / 1000)
    dx, dy, dz = x - sx, y - sy, r[2] - sz
    phi, lam = math.radians(float(station["lat"])), math.radians(float(station["lon"]))
    up = (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))
    return math.degrees(math.asin((dx * up[0] + dy * up[1] + dz * up[2]) / math.sqrt(dx * dx + dy * dy + dz * dz)))


def _scanned_passes(line1: str, line2: str, station: dict) -> list[tuple[datetime, datetime, float]]:
    sat = Satrec.twoline2rv(line1, line2)
    passes, start, peak, at = [], None, 0.0, EPOCH_WINDOW[0]
    while at < EPOCH_WINDOW[1]:
        elevation = _elevation(sat, station, at)
        if elevation >= MIN_ELEVATION_DEGREES:
            start, peak = start or at, max(peak, elevation)
        elif start is not None:
            passes.append((start, at, peak))
            start, peak = None, 0.0
        at += STEP
    return passes


@pytest.mark.parametrize("satellite", [0, 5, 11])
def test_contact_windows_match_an_independent_sgp4_elevation_scan(satellite: int) -> None:
    line1, line2 = TLES[satellite]
    computed = contacts(line1, line2, start=EPOCH_WINDOW[0], end=EPOCH_WINDOW[1])
    expected = []
    for station in GROUND_STATIONS:
        expected += [(station["code"], *found) for found in _scanned_passes(line1, line2, station)]
    # Passes cut by the window's ends are left out of the comparison.
    inside = [c for c in computed if EPOCH_WINDOW[0] < c.start and c.end < EPOCH_WINDOW[1]]
    expected.sort(key=lambda row: row[1])

    assert len(inside) == len(expected) > 0
    for contact, (station, start, end, peak) in zip(inside, expected, strict=True):
        assert contact.station == station
        # The scan's step, and a GMST rotation without polar motion or the equation of the equinoxes.
        assert abs((contact.start - start).total_seconds()) <= 15
        assert abs((contact.end - end).total_seconds()) <= 15
        assert contact.max_elevation == pytest.approx(peak, abs=0.5)


def test_a_downlink_larger_than_a_pass_spans_several_passes_in_order() -> None:
    line1, line2 = TLES[0]
    start = EPOCH_WINDOW[0]
    size = 150  # GB: at 1 Gbps, 20 minutes of contact; a pass lasts under 10

    transfer = downlink(line1, line2, start=start, size_gb=size, mbps=1000, horizon=timedelta(days=2))

    assert transfer is not None
    assert len(transfer.windows) >= 3
    assert sum(gb for *_, gb in transfer.windows) == pytest.approx(size, abs=0.01)
    previous_until = start
    for contact, begin, until, _ in transfer.windows:
        assert contact.start <= begin < until <= contact.end
        assert begin >= previous_until  # one link: no second held at once
        previous_until = until
    assert transfer.finished_at == transfer.windows[-1][2]
    all_passes = contacts(line1, line2, start=start, end=transfer.finished_at)
    assert transfer.windows[0][0] == all_passes[0]  # the first contact after the start is used


def test_computing_contacts_downloads_and_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The built-in timescale and SGP4 need no file: a fresh process computes contacts offline."""
    import skyfield.iokit

    from orbit import contacts as module

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"skyfield tried to download {args}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(skyfield.iokit, "download", refuse)
    monkeypatch.setattr(skyfield.iokit, "urlopen", refuse)
    for cached in (module.timescale, module._satellite, module._day_passes):
        cached.cache_clear()

    found = contacts(*TLES[1], start=EPOCH_WINDOW[0], end=EPOCH_WINDOW[1])

    assert found
    assert list(tmp_path.iterdir()) == []
