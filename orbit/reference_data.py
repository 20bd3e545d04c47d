"""The orbit hub: the space computing constellation as supply. Plain Python (no Django imports).

The real constellation's elements are not reachable here: its TLEs are GENERATED, plausible ones
(one sun-synchronous plane near 500 km, 97.4 degrees, twelve satellites 30 degrees apart, epoch
2026-03-13), made by ``scripts/generate_orbit_tles.py``. Ground station coordinates are
approximations. Sources and approximations: docs/reference-data.md, "The orbit hub".
"""

from decimal import Decimal

HUB_CODE = "orbit"

HUB: dict = {
    "code": HUB_CODE,
    "name": "Orbit: space computing constellation",
    "name_zh": "太空计算星座",
    "region": "orbit",
    "cluster": "Sun-synchronous plane near 500 km, launched from Jiuquan on 14 May 2025",
    "provinces": ["Orbit"],
    "hub_provinces": ["Orbit"],
    # Solar power: no grid tariff, one flat band at no cost.
    "tariff": {"source": "solar", "bands": [{"band": "flat", "hours": [[0, 24]], "price": Decimal("0")}]},
    "pue": Decimal("1.00"),
    "green_share": Decimal("1.000"),
    "latency_ms": {},
}

# The on-board computer, one "card" per satellite: 744 TOPS (INT8) as announced; FP16 a quarter.
GPU_MODEL: dict = {
    "code": "orbit-744t",
    "name": "On-board AI computer (744 TOPS)",
    "vendor": "Space computing constellation",
    "memory_gb": 64,
    "fp16_tflops": Decimal("186.0"),
    "power_watts": 400,
}

# (line 1, line 2), generated: see the module's docstring.
TLES: list[tuple[str, str]] = [
    (
        "1 90001U          26072.00000000  .00000000  00000-0  25000-4 0    01",
        "2 90001  97.4019 160.0000 0001000  90.0000   0.0000 15.21937835    03",
    ),
    (
        "1 90002U          26072.00000000  .00000000  00000-0  25000-4 0    02",
        "2 90002  97.4019 160.0000 0001000  90.0000  30.0000 15.21937835    07",
    ),
    (
        "1 90003U          26072.00000000  .00000000  00000-0  25000-4 0    03",
        "2 90003  97.4019 160.0000 0001000  90.0000  60.0000 15.21937835    01",
    ),
    (
        "1 90004U          26072.00000000  .00000000  00000-0  25000-4 0    04",
        "2 90004  97.4019 160.0000 0001000  90.0000  90.0000 15.21937835    05",
    ),
    (
        "1 90005U          26072.00000000  .00000000  00000-0  25000-4 0    05",
        "2 90005  97.4019 160.0000 0001000  90.0000 120.0000 15.21937835    00",
    ),
    (
        "1 90006U          26072.00000000  .00000000  00000-0  25000-4 0    06",
        "2 90006  97.4019 160.0000 0001000  90.0000 150.0000 15.21937835    04",
    ),
    (
        "1 90007U          26072.00000000  .00000000  00000-0  25000-4 0    07",
        "2 90007  97.4019 160.0000 0001000  90.0000 180.0000 15.21937835    08",
    ),
    (
        "1 90008U          26072.00000000  .00000000  00000-0  25000-4 0    08",
        "2 90008  97.4019 160.0000 0001000  90.0000 210.0000 15.21937835    03",
    ),
    (
        "1 90009U          26072.00000000  .00000000  00000-0  25000-4 0    09",
        "2 90009  97.4019 160.0000 0001000  90.0000 240.0000 15.21937835    07",
    ),
    (
        "1 90010U          26072.00000000  .00000000  00000-0  25000-4 0    01",
        "2 90010  97.4019 160.0000 0001000  90.0000 270.0000 15.21937835    02",
    ),
    (
        "1 90011U          26072.00000000  .00000000  00000-0  25000-4 0    02",
        "2 90011  97.4019 160.0000 0001000  90.0000 300.0000 15.21937835    07",
    ),
    (
        "1 90012U          26072.00000000  .00000000  00000-0  25000-4 0    03",
        "2 90012  97.4019 160.0000 0001000  90.0000 330.0000 15.21937835    01",
    ),
]

# Per satellite: compute, storage and links. Figures in the range announced for the constellation
# (744 TOPS each, 100 Gbps laser inter-satellite links); storage and the X-band downlink are assumed.
SATELLITE: dict = {
    "process_gb_per_hour": Decimal("120"),  # imagery the on-board computer analyses in an hour
    "storage_gb": 2_500,
    "downlink_mbps": 1_000,
    "isl_mbps": 100_000,
    "price_per_card_hour": Decimal("300.0000"),  # the on-board computer, per hour
    "downlink_price_per_gb": Decimal("4.0000"),  # ground station time, per GB brought down
}

# Ground analysis of downlinked data: GB one ground card analyses in an hour.
GROUND_GB_PER_CARD_HOUR = Decimal("400")

# Ground stations: coordinates approximate (city-level), minimum elevation for a contact.
GROUND_STATIONS: list[dict] = [
    {"code": "kashgar", "name": "Kashgar", "lat": Decimal("39.50"), "lon": Decimal("76.00"), "elevation_m": 1300},
    {"code": "miyun", "name": "Beijing Miyun", "lat": Decimal("40.45"), "lon": Decimal("116.85"), "elevation_m": 100},
    {"code": "sanya", "name": "Sanya", "lat": Decimal("18.30"), "lon": Decimal("109.30"), "elevation_m": 50},
    {"code": "jiamusi", "name": "Jiamusi", "lat": Decimal("46.80"), "lon": Decimal("130.30"), "elevation_m": 90},
    {"code": "kunming", "name": "Kunming", "lat": Decimal("25.00"), "lon": Decimal("102.70"), "elevation_m": 1900},
]
MIN_ELEVATION_DEGREES = 10.0
