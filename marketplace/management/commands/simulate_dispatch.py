import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.timezones import local_zone
from marketplace.dispatch import PoolSnapshot
from marketplace.orbit_simulation import simulate_orbit
from marketplace.reserved_simulation import reserved_figures, simulate_reserved
from marketplace.selectors import pool_snapshots
from marketplace.simulation import PolicyResult, generate_orders, simulate
from marketplace.token_selectors import endpoint_snapshots
from marketplace.token_simulation import simulate_tokens
from orbit.models import Satellite
from pools.models import ResourcePool

ELECTRICITY_CUT_TARGET = 0.18
# Against a cost-only optimizer (the cheapest pool now that meets the latency bound), issue 22.
COST_ONLY_ELECTRICITY_CUT_TARGET = 0.15


class Command(BaseCommand):
    help = (
        "Replay a day of orders on the pools in the database (seed_national first) with the dispatcher, "
        "a naive baseline (nearest east hub, start at once) and a cost-only optimizer (the cheapest pool "
        "now anywhere within the latency bound, start at once), and compare them. Writes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--orders", type=int, default=20_000, help="Orders in the day (default 20,000).")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
        parser.add_argument(
            "--orbit",
            action="store_true",
            help="Instead: a day of in-orbit analyses (seed_orbit first), in orbit versus downlinked to the ground.",
        )
        parser.add_argument("--analyses", type=int, default=500, help="In-orbit analyses in the day (--orbit).")
        parser.add_argument(
            "--tokens", action="store_true", help="Replay a day of token jobs on the model endpoints instead."
        )
        parser.add_argument("--jobs", type=int, default=20_000, help="With --tokens: jobs in the day (default 20,000).")
        parser.add_argument(
            "--reserved-share",
            type=float,
            default=0.0,
            help="Also book this share of every pool's free cards reserved for the day (e.g. 0.3), partly unused, "
            "and compare the day's on-demand orders without and with deposits of the unused cards.",
        )
        parser.add_argument(
            "--unused-share",
            type=float,
            default=0.4,
            help="With --reserved-share: the share of a booking its holder leaves unused, on average (default 0.4).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["orders"] < 1:
            raise CommandError("--orders must be at least 1.")
        if not (0 <= options["reserved_share"] < 1 and 0 <= options["unused_share"] <= 1):
            raise CommandError("--reserved-share must lie in [0, 1) and --unused-share in [0, 1].")
        now = timezone.now()
        if options["tokens"]:
            self._tokens(now=now, jobs=options["jobs"], seed=options["seed"], as_json=options["json"])
            return
        pools = [pool for pool in pool_snapshots(now=now) if not pool.stale]
        if not pools:
            raise CommandError("No active pools with a fresh heartbeat: run `manage.py seed_national` first.")
        if options["orbit"]:
            self._orbit(pools, now, options)
            return
        self.stderr.write(f"Simulating {options['orders']:,} orders on {len(pools)} pools ...")

        def progress(policy: str, done: int, total: int) -> None:
            self.stderr.write(f"  {policy}: {done:,}/{total:,} orders")

        grid, baseline, cost_only = simulate(
            pools=pools, day=now, seed=options["seed"], orders=options["orders"], progress=progress
        )
        electricity_cut = 1 - grid.electricity_per_card_hour / baseline.electricity_per_card_hour
        cost_cut = 1 - grid.cost_per_card_hour / baseline.cost_per_card_hour
        cost_only_electricity_cut = 1 - grid.electricity_per_card_hour / cost_only.electricity_per_card_hour
        cost_only_cost_cut = 1 - grid.cost_per_card_hour / cost_only.cost_per_card_hour
        checks = {
            f"electricity cost per card-hour cut >= {ELECTRICITY_CUT_TARGET:.0%}": electricity_cut
            >= ELECTRICITY_CUT_TARGET,
            f"electricity cost per card-hour >= {COST_ONLY_ELECTRICITY_CUT_TARGET:.0%} below the cost-only optimizer": (
                cost_only_electricity_cut >= COST_ONLY_ELECTRICITY_CUT_TARGET
            ),
            "total buyer cost lower": grid.buyer_cost < baseline.buyer_cost,
            "zero latency violations": grid.latency_violations == 0,
        }
        reserved = self._reserved(pools, now, options) if options["reserved_share"] else None
        if options["json"]:
            figures = {
                "dispatcher": grid.as_dict(),
                "baseline": baseline.as_dict(),
                "cost_only": cost_only.as_dict(),
                "electricity_cut": round(electricity_cut, 4),
                "cost_per_card_hour_cut": round(cost_cut, 4),
                "cost_only_electricity_cut": round(cost_only_electricity_cut, 4),
                "cost_only_cost_per_card_hour_cut": round(cost_only_cost_cut, 4),
                "checks": checks,
            }
            if reserved is not None:
                figures["reserved"] = reserved
            self.stdout.write(json.dumps(figures, indent=2))
        else:
            self._table(grid, baseline, cost_only)
            self.stdout.write("\nthe dispatcher against     the naive baseline   the cost-only optimizer")
            self.stdout.write(
                f"electricity per card-hour  {-electricity_cut:+18.1%}   {-cost_only_electricity_cut:+18.1%}"
            )
            self.stdout.write(f"buyer cost per card-hour   {-cost_cut:+18.1%}   {-cost_only_cost_cut:+18.1%}")
            for check, passed in checks.items():
                self.stdout.write(f"{'PASS' if passed else 'FAIL'}  {check}")
            if reserved is not None:
                self.stdout.write(
                    f"\nreserved capacity ({options['reserved_share']:.0%} of the cards booked for the day):"
                )
                for key, value in reserved.items():
                    self.stdout.write(f"  {key:36}{value!s:>16}")

    def _reserved(self, pools: list[PoolSnapshot], now: datetime, options: dict[str, Any]) -> dict[str, Any]:
        """The day's on-demand orders with a share of every pool booked reserved, without and with deposits."""
        self.stderr.write("Simulating reserved bookings, without and with deposits ...")
        day = now.astimezone(local_zone()).replace(hour=0, minute=0, second=0, microsecond=0)
        demand = generate_orders(
            day=day, seed=options["seed"], orders=options["orders"], models={pool.gpu_model for pool in pools}
        )
        without, with_deposits = simulate_reserved(
            pools=pools,
            orders=demand,
            seed=options["seed"],
            reserved_share=options["reserved_share"],
            unused_share=options["unused_share"],
            platform_share=settings.DEPOSIT_PLATFORM_SHARE,
        )
        return reserved_figures(without, with_deposits)

    def _orbit(self, pools: list[PoolSnapshot], now: datetime, options: dict[str, Any]) -> None:
        satellites = list(Satellite.objects.select_related("pool").filter(pool__status=ResourcePool.Status.ACTIVE))
        if not satellites:
            raise CommandError("No satellites: run `manage.py seed_orbit` first.")
        self.stderr.write(f"Simulating {options['analyses']:,} in-orbit analyses over {len(satellites)} satellites ...")
        figures = simulate_orbit(
            satellites=satellites, ground_pools=pools, day=now, seed=options["seed"], analyses=options["analyses"]
        )
        rows = {name: way.as_dict() for name, way in figures.items()}
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        self.stdout.write(f"{'':26}{'in orbit':>14}{'ground':>14}{'chosen':>14}")
        for key in rows["in_orbit"]:
            self.stdout.write(f"{key:26}" + "".join(f"{rows[name][key]!s:>14}" for name in rows))

    def _table(self, *policies: PolicyResult) -> None:
        columns = [policy.as_dict() for policy in policies]
        self.stdout.write(f"{'':28}" + "".join(f"{policy.name:>16}" for policy in policies))
        for key in list(columns[0])[1:]:
            self.stdout.write(f"{key:28}" + "".join(f"{column[key]!s:>16}" for column in columns))

    def _tokens(self, *, now: datetime, jobs: int, seed: int, as_json: bool) -> None:
        if jobs < 1:
            raise CommandError("--jobs must be at least 1.")
        endpoints = [endpoint for endpoint in endpoint_snapshots(now=now) if not endpoint.stale]
        if not endpoints:
            raise CommandError("No active model endpoints with a fresh heartbeat: run `manage.py seed_national` first.")
        self.stderr.write(f"Simulating {jobs:,} token jobs on {len(endpoints)} endpoints ...")
        day = now.astimezone(local_zone()).replace(hour=0, minute=0, second=0, microsecond=0)
        grid, baseline = simulate_tokens(endpoints=endpoints, day=day, seed=seed, jobs=jobs)
        electricity_cut = 1 - grid.per_million(grid.electricity_cost) / baseline.per_million(baseline.electricity_cost)
        cost_cut = 1 - grid.per_million(grid.buyer_cost) / baseline.per_million(baseline.buyer_cost)
        checks = {
            f"electricity cost per million tokens cut >= {ELECTRICITY_CUT_TARGET:.0%}": electricity_cut
            >= ELECTRICITY_CUT_TARGET,
            "zero latency violations": grid.latency_violations == 0,
            "every job placed": grid.unplaced == 0,
        }
        if as_json:
            figures = {
                "dispatcher": grid.as_dict(),
                "baseline": baseline.as_dict(),
                "electricity_cut": round(electricity_cut, 4),
                "cost_per_million_cut": round(cost_cut, 4),
                "checks": checks,
            }
            self.stdout.write(json.dumps(figures, indent=2))
            return
        rows = grid.as_dict()
        self.stdout.write(f"{'':28}{'dispatcher':>16}{'baseline':>16}")
        for key in list(rows)[1:]:
            self.stdout.write(f"{key:28}{rows[key]!s:>16}{baseline.as_dict()[key]!s:>16}")
        self.stdout.write(f"\nelectricity cost per million tokens: {electricity_cut:+.1%} cut by the dispatcher")
        self.stdout.write(f"buyer cost per million tokens:       {cost_cut:+.1%} cut by the dispatcher")
        for check, passed in checks.items():
            self.stdout.write(f"{'PASS' if passed else 'FAIL'}  {check}")
