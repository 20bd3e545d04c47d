"""The raw usage events table, and its monthly partitions (PostgreSQL's declarative partitioning).

The table is append-only and read by lease and time; it has no primary-key
index to maintain on the hot path (``id`` is an identity for reference, and
``UsageEventKey`` holds the unique key of every event).

A DEFAULT partition catches events of a month without a partition of its own;
``usage_partitions_ensure`` creates the coming months ahead of time (daily, by
Celery beat) so that the default stays empty.
"""

import logging
from datetime import date

from django.db import connection

logger = logging.getLogger(__name__)

TABLE = "billing_usageevent"

CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigint GENERATED ALWAYS AS IDENTITY,
    source varchar(500) NOT NULL,
    event_id varchar(200) NOT NULL,
    type varchar(64) NOT NULL,
    lease_id uuid NOT NULL,
    provider_id uuid NOT NULL,
    time timestamptz NOT NULL,
    quantity numeric(20, 6),
    cards integer,
    model varchar(100) NOT NULL DEFAULT '',
    input_tokens bigint,
    output_tokens bigint,
    data jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS {TABLE}_lease_time ON {TABLE} (lease_id, time);
CREATE TABLE IF NOT EXISTS {TABLE}_default PARTITION OF {TABLE} DEFAULT;
"""


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def usage_partitions_ensure(*, around: date, months_back: int = 2, months_ahead: int = 3) -> list[str]:
    """Create the monthly partitions from ``months_back`` before ``around`` to
    ``months_ahead`` after it. Returns the partitions created."""
    created = []
    with connection.cursor() as cursor:
        for offset in range(-months_back, months_ahead + 1):
            start = _month_start(around.year, around.month + offset)
            end = _month_start(start.year, start.month + 1)
            name = f"{TABLE}_y{start.year}m{start.month:02d}"
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is not None:
                continue
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {TABLE}_default WHERE time >= %s AND time < %s)",  # noqa: S608 - constant table
                [start, end],
            )
            if cursor.fetchone()[0]:
                logger.warning("usage events of %s sit in the default partition; not creating %s", start, name)
                continue
            cursor.execute(
                f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)",
                [start.isoformat(), end.isoformat()],
            )
            created.append(name)
    return created
