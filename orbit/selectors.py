"""Reads of the orbit hub: satellites as their parties see them, contacts, datasets, the constellation."""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from orbit.contacts import Contact, contacts
from orbit.models import Dataset, Satellite
from organizations.models import Organization
from pools.models import ResourcePool
from pools.selectors import utilization

NEXT_CONTACT_HORIZON = timedelta(days=1)


def satellite_list(*, organization: Organization) -> QuerySet[Satellite]:
    """Providers see their own satellites; buyers those in the market (active); operators all."""
    satellites = Satellite.objects.select_related("pool", "pool__provider")
    if organization.kind == Organization.Kind.OPERATOR:
        return satellites
    if organization.kind == Organization.Kind.PROVIDER:
        return satellites.filter(pool__provider=organization)
    if organization.kind == Organization.Kind.BUYER:
        return satellites.filter(pool__status=ResourcePool.Status.ACTIVE)
    return satellites.none()


def satellite_contacts(*, satellite: Satellite, start: datetime, end: datetime) -> list[Contact]:
    return contacts(satellite.tle_line1, satellite.tle_line2, start=start, end=end)


def dataset_list(*, organization: Organization) -> QuerySet[Dataset]:
    """Providers see the datasets their satellites hold; buyers their own data; operators all."""
    datasets = Dataset.objects.select_related("satellite", "provider", "buyer")
    if organization.kind == Organization.Kind.OPERATOR:
        return datasets
    if organization.kind == Organization.Kind.PROVIDER:
        return datasets.filter(provider=organization)
    if organization.kind == Organization.Kind.BUYER:
        return datasets.filter(buyer=organization)
    return datasets.none()


def constellation_status(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each satellite, its next contact (or the one it is in) and its on-board computer's use
    (reserved over its cards), for the operator's page."""
    now = now or timezone.now()
    rows = []
    satellites = Satellite.objects.select_related("pool").annotate(datasets_gb=Sum("datasets__size_gb"))
    for satellite in satellites.order_by("plane_slot"):
        upcoming = satellite_contacts(satellite=satellite, start=now, end=now + NEXT_CONTACT_HORIZON)
        pool = satellite.pool
        rows.append(
            {
                "satellite": satellite,
                "name": pool.name,
                "status": pool.status,
                "next_contact": upcoming[0] if upcoming else None,
                "utilization": utilization(pool.reserved_cards, pool.cards),
                "datasets_gb": satellite.datasets_gb or Decimal(0),  # type: ignore[attr-defined]  # an annotation
            }
        )
    return rows


def constellation_utilization(rows: list[dict[str, Any]]) -> Decimal:
    """The constellation's in-orbit utilization: reserved on-board computers over all of them."""
    pools = [row["satellite"].pool for row in rows if row["status"] == ResourcePool.Status.ACTIVE]
    return utilization(sum(pool.reserved_cards for pool in pools), sum(pool.cards for pool in pools))
