from typing import Any

from django.dispatch import receiver

from marketplace.tasks import leases_fail_lost_pools
from pools.models import ResourcePool
from pools.signals import pool_status_changed


@receiver(pool_status_changed)
def fail_leases_of_a_pool_out_of_the_market(sender: Any, to_status: str, **kwargs: Any) -> None:
    """A suspended or retired pool's leases end as failed, without waiting for the beat."""
    if to_status in (ResourcePool.Status.SUSPENDED, ResourcePool.Status.RETIRED):
        leases_fail_lost_pools.delay()
