"""Pools for operators, served by ``core.metrics``: read from the database when scraped."""

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from pools.selectors import pools_by_health


class PoolsCollector:
    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "grid_pools",
            "Pools by status: pending approval, active (fresh heartbeats), stale (active, heartbeats "
            "older than POOL_HEARTBEAT_STALE_SECONDS), suspended, retired.",
            labels=["status"],
        )
        for status, count in pools_by_health().items():
            family.add_metric([status], count)
        yield family
