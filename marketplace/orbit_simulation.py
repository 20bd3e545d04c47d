"""A day of in-orbit analyses over the constellation (``simulate_dispatch --orbit``): each priced
both ways, in orbit and downlinked then computed on the ground, and the way the quote chooses.
Nothing is written or reserved: satellites do not queue for one another here."""

import random
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from marketplace.dispatch import PoolSnapshot
from marketplace.orbit import orbit_quote
from orbit.models import Dataset, Satellite

# (kind, share of the day's analyses, dataset GB range, result GB range, deadline hours range or None)
KINDS = [
    ("disaster_response", 0.4, (50, 400), (0.05, 0.5), (1.0, 6.0)),
    ("agriculture", 0.6, (20, 200), (0.5, 5.0), None),
]


@dataclass
class WayFigures:
    hours: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    undelivered: int = 0
    missed_deadlines: int = 0

    def as_dict(self) -> dict[str, Any]:
        hours = sorted(self.hours)
        return {
            "delivered": len(hours),
            "undelivered": self.undelivered,
            "missed_deadlines": self.missed_deadlines,
            "median_hours_to_result": round(statistics.median(hours), 2) if hours else None,
            "p95_hours_to_result": round(hours[int(0.95 * (len(hours) - 1))], 2) if hours else None,
            "cost_cny": round(sum(self.costs), 2),
            "cost_per_analysis_cny": round(statistics.mean(self.costs), 2) if self.costs else None,
        }


def simulate_orbit(
    *, satellites: list[Satellite], ground_pools: list[PoolSnapshot], day: datetime, seed: int, analyses: int
) -> dict[str, WayFigures]:
    """Figures for the in-orbit way, the downlink-then-ground way, and the chosen one."""
    rng = random.Random(seed)  # noqa: S311 - simulated demand, not secrets
    figures = {"in_orbit": WayFigures(), "ground": WayFigures(), "chosen": WayFigures()}
    for _ in range(analyses):
        kind, _, size_range, result_range, deadline_range = rng.choices(KINDS, weights=[k[1] for k in KINDS])[0]
        satellite = rng.choice(satellites)
        now = day + timedelta(seconds=rng.uniform(0, 86_400))
        dataset = Dataset(
            satellite=satellite,
            size_gb=Decimal(str(round(rng.uniform(*size_range), 1))),
            captured_at=now,
            region=kind,
        )
        deadline = now + timedelta(hours=rng.uniform(*deadline_range)) if deadline_range else None
        quote = orbit_quote(
            dataset=dataset,
            result_size_gb=Decimal(str(round(rng.uniform(*result_range), 2))),
            deadline=deadline,
            now=now,
            ground_pools=ground_pools,
        )
        ways = {option.plan: option for option in quote.options}
        ways["chosen"] = quote.chosen or min(quote.options, key=lambda o: (o.result_at is None, o.result_at or now))
        for name, option in ways.items():
            way = figures[name]
            if option.result_at is None:
                way.undelivered += 1
                continue
            way.hours.append((option.result_at - now).total_seconds() / 3600)
            way.costs.append(option.cost)
            if deadline is not None and option.result_at > deadline:
                way.missed_deadlines += 1
    return figures
