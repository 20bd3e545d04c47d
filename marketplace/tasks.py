"""Thin Celery tasks: each calls a service that is safe to run twice."""

from celery import shared_task
from django.conf import settings

from marketplace import services


@shared_task(name="marketplace.tasks.leases_start_due")
def leases_start_due() -> int:
    return services.leases_start_due()


@shared_task(name="marketplace.tasks.leases_end_expired")
def leases_end_expired() -> int:
    return services.leases_end_expired()


@shared_task(name="marketplace.tasks.leases_fail_lost_pools")
def leases_fail_lost_pools() -> int:
    return services.leases_fail_lost_pools(lost_after_seconds=settings.LEASE_POOL_LOST_SECONDS)


@shared_task(name="marketplace.tasks.price_index_snapshot")
def price_index_snapshot() -> int:
    return services.price_index_snapshot()


@shared_task(name="marketplace.tasks.leases_end_above_max_price")
def leases_end_above_max_price() -> int:
    return services.leases_end_above_max_price()
