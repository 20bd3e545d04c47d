"""Every write of the orbit hub: its reference rows, the constellation's pools, datasets."""

from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError, RuleViolation
from orbit import reference_data
from orbit.models import Dataset, Satellite
from organizations.models import Organization
from pools.models import GpuModel, Hub, ResourcePool
from pools.reference import hub_defaults
from pools.services import pool_approve, pool_heartbeat, pool_register

CAPTURE_FUTURE_LIMIT = timedelta(minutes=5)


def orbit_reference_load() -> None:
    """The ``orbit`` hub and its on-board computer model, upserted by code. Loaded with the
    constellation, not by a migration: the national hubs stay the 8 until a constellation joins."""
    hub = reference_data.HUB
    Hub.objects.update_or_create(code=hub["code"], defaults=hub_defaults(hub))
    gpu = reference_data.GPU_MODEL
    GpuModel.objects.update_or_create(code=gpu["code"], defaults={k: v for k, v in gpu.items() if k != "code"})


@transaction.atomic
def constellation_register(*, provider: Organization, by: str, now: datetime | None = None) -> list[Satellite]:
    """List the constellation's satellites as active pools of ``provider`` in the orbit hub, with
    their elements and rates. Satellites already listed are kept as they are."""
    now = now or timezone.now()
    orbit_reference_load()
    specs = reference_data.SATELLITE
    satellites: list[Satellite] = []
    for slot, (line1, _) in enumerate(reference_data.TLES):
        norad_id = int(line1[2:7])
        existing = Satellite.objects.filter(norad_id=norad_id).first()
        if existing is not None:
            satellites.append(existing)
            continue
        pool = pool_register(
            provider=provider,
            name=f"Orbit-{slot + 1:02d} ({norad_id})",
            hub_id=reference_data.HUB_CODE,
            province="Orbit",
            gpu_model=GpuModel.objects.get(code=reference_data.GPU_MODEL["code"]),
            cards=1,
            price_per_card_hour=specs["price_per_card_hour"],
            pue=reference_data.HUB["pue"],
            green_share=reference_data.HUB["green_share"],
            by=by,
        )
        pool_approve(pool=pool, by=by, reason="constellation listed")
        pool_heartbeat(pool=pool, healthy_cards=1, observed_at=now)
        satellites.append(satellite_add(pool=pool, slot=slot))
    return satellites


def satellite_add(*, pool: ResourcePool, slot: int) -> Satellite:
    """Make an orbit hub pool the satellite of the constellation's ``slot``: its elements and rates."""
    line1, line2 = reference_data.TLES[slot]
    specs = reference_data.SATELLITE
    return Satellite.objects.create(
        pool=pool,
        norad_id=int(line1[2:7]),
        plane_slot=slot,
        tle_line1=line1,
        tle_line2=line2,
        process_gb_per_hour=specs["process_gb_per_hour"],
        storage_gb=specs["storage_gb"],
        downlink_mbps=specs["downlink_mbps"],
        isl_mbps=specs["isl_mbps"],
        downlink_price_per_gb=specs["downlink_price_per_gb"],
    )


@transaction.atomic
def dataset_register(
    *,
    provider: Organization,
    buyer_slug: str,
    pool_id: UUID,
    size_gb: Decimal,
    captured_at: datetime,
    region: str,
) -> Dataset:
    """A provider's agent registers data its satellite captured for a buyer and holds."""
    buyer = Organization.objects.filter(slug=buyer_slug, kind=Organization.Kind.BUYER).first()
    if buyer is None:
        raise RuleViolation(
            gettext("No buyer has this slug; give the slug of the buyer whose data this is."),
            code="unknown_buyer",
            fields={"buyer": [{"code": "unknown_buyer", "message": "No such buyer."}]},
        )
    satellite = (
        Satellite.objects.select_for_update(of=("self",))
        .filter(pool_id=pool_id, pool__provider=provider)
        .exclude(pool__status=ResourcePool.Status.RETIRED)
        .first()
    )
    if satellite is None:
        raise RuleViolation(
            gettext("None of your satellites has this pool id; give the pool id of one of your orbit hub pools."),
            code="unknown_satellite",
            fields={"satellite": [{"code": "unknown_satellite", "message": "Not one of your satellites."}]},
        )
    if captured_at > timezone.now() + CAPTURE_FUTURE_LIMIT:
        raise ApplicationError(
            gettext("'captured_at' is in the future; give the time of the capture."),
            code="captured_in_future",
            fields={"captured_at": [{"code": "captured_in_future", "message": "In the future."}]},
        )
    if size_gb > satellite.storage_gb:
        raise RuleViolation(
            gettext("The satellite stores at most %(storage_gb)s GB.") % {"storage_gb": satellite.storage_gb},
            code="over_storage",
            fields={"size_gb": [{"code": "over_storage", "message": f"At most {satellite.storage_gb}."}]},
        )
    return Dataset.objects.create(
        provider=provider, buyer=buyer, satellite=satellite, size_gb=size_gb, captured_at=captured_at, region=region
    )
