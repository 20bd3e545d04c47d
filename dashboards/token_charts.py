"""The operator's chart of the national electricity cost per million tokens, by hub and hour."""

from datetime import datetime, timedelta
from typing import Any

from billing.token_electricity import electricity_per_million_by_hub_and_hour
from dashboards.formatting import local_time

DAY = timedelta(days=1)


def token_electricity_series(*, now: datetime) -> tuple[list[str], dict[str, list[Any]]]:
    """The last 24 hours' labels, and per hub its endpoints' electricity cost over the tokens they
    served (CNY per million), for ``dashboards.pages.line_chart``."""
    start = (now - DAY).replace(minute=0, second=0, microsecond=0)
    hours = [start + timedelta(hours=n) for n in range(25)]
    rows = electricity_per_million_by_hub_and_hour(since=start, until=now)
    by_hub: dict[str, dict[datetime, float]] = {}
    for row in rows:
        by_hub.setdefault(row["hub"], {})[row["hour"]] = round(float(row["per_million_tokens"]), 4)
    labels = [local_time(hour, "H:00") for hour in hours]
    return labels, {hub: [values.get(hour) for hour in hours] for hub, values in sorted(by_hub.items())}
