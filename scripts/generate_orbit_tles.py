"""Generate the plausible TLEs of orbit/reference_data.py (the real constellation's are not reachable here).

One sun-synchronous plane near 500 km (as a single Long March 2D launch leaves them), twelve
satellites 30 degrees apart in mean anomaly, epoch 2026-03-13 00:00 UTC. Run it and paste the
output into orbit/reference_data.py: ``.venv/bin/python scripts/generate_orbit_tles.py``.
"""

import math

from sgp4.api import WGS72, Satrec
from sgp4.exporter import export_tle

EPOCH_DAYS_SINCE_1949_12_31 = 27_831.0  # 2026-03-13 00:00 UTC (day 72 of 2026)
ALTITUDE_KM = 500.0
EARTH_RADIUS_KM = 6378.135  # WGS72, as SGP4
MU = 398_600.8  # km^3/s^2, WGS72
J2 = 0.001082616


def main() -> None:
    a = EARTH_RADIUS_KM + ALTITUDE_KM
    n = math.sqrt(MU / a**3)  # rad/s
    # Sun-synchronous: the node precesses 360 degrees a year (0.9856 deg/day).
    precession = 2 * math.pi / (365.2422 * 86400)
    cos_i = -precession / (1.5 * J2 * (EARTH_RADIUS_KM / a) ** 2 * n)
    inclination = math.acos(cos_i)
    for index in range(12):
        sat = Satrec()
        sat.sgp4init(
            WGS72,
            "i",
            90_001 + index,
            EPOCH_DAYS_SINCE_1949_12_31,
            2.5e-5,  # bstar
            0.0,
            0.0,
            0.0001,  # eccentricity
            math.radians(90.0),  # argument of perigee
            inclination,
            math.radians(30.0 * index),  # mean anomaly
            n * 60,  # rad/min
            math.radians(160.0),  # RAAN: a 10:30 descending node near the epoch
        )
        line1, line2 = export_tle(sat)
        print(f'    ("{line1}", "{line2}"),')


if __name__ == "__main__":
    main()
