"""Thin Celery tasks: each takes ids or plain values and calls a service that is safe to run twice."""

from datetime import datetime
from uuid import UUID

from celery import shared_task
from django.utils import timezone

from billing.partitions import usage_partitions_ensure as _ensure_partitions
from billing.services.usage import usage_rollup_buckets


@shared_task(name="billing.tasks.usage_rollup")
def usage_rollup(buckets: list[list[str]]) -> int:
    """Recompute the rollups of these [lease id, hour] buckets from the raw events (queue: ingest)."""
    return usage_rollup_buckets(buckets=[(UUID(lease_id), datetime.fromisoformat(hour)) for lease_id, hour in buckets])


@shared_task(name="billing.tasks.usage_partitions_ensure")
def usage_partitions_ensure() -> list[str]:
    """Create the coming months' partitions of the raw usage events (daily, queue: ingest)."""
    return _ensure_partitions(around=timezone.now().date())
