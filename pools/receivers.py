from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from organizations.models import Organization
from pools.models import ResourcePool
from pools.services import invalidate_offer_snapshot


@receiver(post_save, sender=Organization)
def offers_show_a_providers_new_name(sender: Any, instance: Organization, created: bool, **kwargs: Any) -> None:
    """Offers show the provider's slug and legal name (organizations cannot call pools)."""
    if not created and instance.kind == Organization.Kind.PROVIDER:
        invalidate_offer_snapshot(*ResourcePool.objects.filter(provider=instance).values_list("pk", flat=True))
