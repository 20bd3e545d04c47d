"""Every write to pools: registration, prices, status, heartbeats and capacity."""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError, ConflictError, RuleViolation
from core.rows import Rows
from organizations.models import AuditEvent, Organization
from organizations.services import audit_record
from pools import hooks
from pools.models import GpuModel, Heartbeat, ModelEndpoint, PoolStatusChange, PricePlan, ResourcePool
from pools.selectors import pool_is_stale
from pools.signals import pool_status_changed
from pools.tariffs import default_factors, hour_bands, hour_prices

# A price version may start this long before the request arrives (clock skew),
# never earlier: nobody changes a price retroactively.
PRICE_CHANGE_SKEW = timedelta(seconds=60)

Status = ResourcePool.Status

# The current transaction's id, which every later-starting transaction's snapshot sees as
# committed once it is (see ``marketplace.offers``).
_CURRENT_XID = RawSQL("pg_current_xact_id()::text::bigint", ())


def invalidate_offer_snapshot(*pool_ids: Any, **changes: Any) -> None:
    """Mark these pools' offers as changed, in the transaction that changes them.

    Every write that changes what an offer shows (price versions, capacity, heartbeats,
    status, the pool's description, and any other capacity source such as deposited
    card-hours) calls this in the same transaction; the offers snapshot of every process
    reloads these pools on its next request once the transaction has committed
    (``marketplace.offers``). ``changes`` are column updates made in the same statement
    (``reserved_cards=F("reserved_cards") + 4``), so a capacity change costs no extra write.
    """
    ResourcePool.objects.filter(pk__in=pool_ids).update(offer_version=_CURRENT_XID, **changes)


def _plan_prices(
    *, pool: ResourcePool, price_per_card_hour: Decimal, time_of_use: Mapping[str, Decimal] | None
) -> tuple[dict[str, str], list[str]]:
    tariff = pool.hub.tariff
    bands = hour_bands(tariff)
    if time_of_use:
        unknown = sorted(set(time_of_use) - set(bands))
        if unknown:
            raise ApplicationError(
                gettext("Hub %(hub_id)s has no time-of-use band %(join)s; its bands are %(join2)s.")
                % {"hub_id": pool.hub_id, "join": ", ".join(unknown), "join2": ", ".join(sorted(set(bands)))},
                code="unknown_band",
                fields={"time_of_use": [{"code": "unknown_band", "message": "Unknown band."}]},
            )
        factors = {band: Decimal(time_of_use.get(band, 1)) for band in set(bands)}
    else:
        factors = default_factors(
            tariff=tariff, base_price=price_per_card_hour, power_watts=pool.gpu_model.power_watts, pue=pool.pue
        )
    prices = hour_prices(base_price=price_per_card_hour, factors=factors, bands=bands)
    return {band: str(factor) for band, factor in sorted(factors.items())}, [str(price) for price in prices]


def _token_prices_json(token_prices: Mapping[str, Mapping[str, Decimal]] | None) -> dict[str, dict[str, str]]:
    return {model: {side: str(price) for side, price in sides.items()} for model, sides in (token_prices or {}).items()}


@transaction.atomic
def pool_register(
    *,
    provider: Organization,
    name: str,
    hub_id: str,
    province: str,
    gpu_model: GpuModel,
    cards: int,
    price_per_card_hour: Decimal,
    pue: Decimal,
    green_share: Decimal,
    city: str = "",
    interconnect: str = ResourcePool.Interconnect.ETHERNET,
    time_of_use: Mapping[str, Decimal] | None = None,
    token_prices: Mapping[str, Mapping[str, Decimal]] | None = None,
    by: str,
) -> ResourcePool:
    """A provider lists a pool; it waits for an operator's approval as ``pending``."""
    if provider.kind != Organization.Kind.PROVIDER:
        raise RuleViolation(gettext("Only a provider organization can register pools."), code="not_a_provider")
    pool = ResourcePool(
        provider=provider,
        name=name,
        hub_id=hub_id,
        province=province,
        city=city,
        gpu_model=gpu_model,
        cards=cards,
        healthy_cards=cards,
        pue=pue,
        green_share=green_share,
        interconnect=interconnect,
        status=Status.PENDING,
        status_changed_by=by,
    )
    if province not in pool.hub.provinces:
        raise ApplicationError(
            gettext("%(province)s is not in the dispatch region of hub %(hub_id)s; that hub serves %(join)s.")
            % {"province": province, "hub_id": pool.hub_id, "join": ", ".join(pool.hub.provinces)},
            code="province_not_in_hub",
            fields={"province": [{"code": "province_not_in_hub", "message": "Not in this hub's region."}]},
        )
    pool.save()
    now = timezone.now()
    factors, prices = _plan_prices(pool=pool, price_per_card_hour=price_per_card_hour, time_of_use=time_of_use)
    PricePlan.objects.create(
        pool=pool,
        version=1,
        effective_from=now,
        running_from=now,
        price_per_card_hour=price_per_card_hour,
        time_of_use=factors,
        time_of_use_custom=bool(time_of_use),
        hour_prices=prices,
        token_prices=_token_prices_json(token_prices),
        created_by=by,
    )
    PoolStatusChange.objects.create(pool=pool, from_status="", to_status=Status.PENDING, changed_by=by, changed_at=now)
    invalidate_offer_snapshot(pool.pk)
    return pool


@transaction.atomic
def price_plan_create(
    *,
    pool: ResourcePool,
    by: str,
    price_per_card_hour: Decimal | None = None,
    time_of_use: Mapping[str, Decimal] | None = None,
    token_prices: Mapping[str, Mapping[str, Decimal]] | None = None,
    reserved_discount: Decimal | None = None,
    effective_from: datetime | None = None,
    dry_run: bool = False,
) -> PricePlan:
    """A new price version from ``effective_from`` (now by default, never in the past).

    What is not given carries over from the latest version. New orders are priced with it
    from ``effective_from``. A lease keeps the version it was placed on for its booked
    hours; outside them a running lease pays the new version from ``running_from``: at
    ``effective_from`` for a decrease, and for a rise (higher than what they pay then in
    any hour or token price) not before ``PRICE_RISE_NOTICE_HOURS`` from now. The hooks
    (marketplace: notices to the buyers; billing: usage to rate again) run after it is made.
    """
    locked = ResourcePool.objects.select_for_update().select_related("hub", "gpu_model").get(pk=pool.pk)
    if locked.status == Status.RETIRED:
        raise ConflictError(gettext("This pool is retired; its prices can no longer change."), code="pool_retired")
    now = timezone.now()
    effective_from = effective_from or now
    if effective_from < now - PRICE_CHANGE_SKEW:
        raise RuleViolation(
            gettext("A price change cannot take effect in the past; give an effective_from from now on."),
            code="retroactive_price_change",
        )
    latest = locked.price_plans.order_by("-version").first()
    assert latest is not None, "every pool is registered with a first price plan"
    if effective_from <= latest.effective_from:
        raise ConflictError(
            gettext(
                "Version %(version)s already takes effect at %(isoformat)s; a new version must take effect after it."
            )
            % {"version": latest.version, "isoformat": latest.effective_from.isoformat()},
            code="price_version_order",
        )
    base = price_per_card_hour if price_per_card_hour is not None else latest.price_per_card_hour
    if time_of_use is None and latest.time_of_use_custom:
        time_of_use = {band: Decimal(factor) for band, factor in latest.time_of_use.items()}
    if time_of_use is None and price_per_card_hour is None:
        factors, prices = dict(latest.time_of_use), list(latest.hour_prices)
    else:
        factors, prices = _plan_prices(pool=locked, price_per_card_hour=base, time_of_use=time_of_use)
    plan = PricePlan(
        pool=locked,
        version=latest.version + 1,
        effective_from=effective_from,
        price_per_card_hour=base,
        time_of_use=factors,
        time_of_use_custom=time_of_use is not None,
        hour_prices=prices,
        token_prices=_token_prices_json(token_prices) if token_prices is not None else latest.token_prices,
        reserved_discount=reserved_discount if reserved_discount is not None else latest.reserved_discount,
        created_by=by,
    )
    plan.rise, plan.running_from = _reaches_running_leases(plan, locked, now=now)
    if dry_run:
        return plan
    plan.save(force_insert=True)
    invalidate_offer_snapshot(locked.pk)
    for hook in hooks.PRICE_VERSION_HOOKS:
        hook(plan)
    return plan


def _reaches_running_leases(plan: PricePlan, pool: ResourcePool, *, now: datetime) -> tuple[bool, datetime]:
    """Whether a new version is a rise, and when it reaches running leases (outside their price
    lock). At once unless it rises from the version they pay then; a rise no higher than a rise
    already announced and still waiting reaches them with it; any other rise after
    ``PRICE_RISE_NOTICE_HOURS`` from now."""
    versions = list(pool.price_plans.order_by("version"))
    latest = versions[-1]
    reached = [version for version in versions if version.running_from <= plan.effective_from]
    paid = max(reached, key=lambda version: version.version) if reached else versions[0]
    if not plan.rises_from(paid):
        return False, plan.effective_from
    if latest.running_from > plan.effective_from and not plan.rises_from(latest):
        return True, latest.running_from
    return True, max(plan.effective_from, now + timedelta(hours=settings.PRICE_RISE_NOTICE_HOURS))


@transaction.atomic
def pool_update(*, pool: ResourcePool, by: str, **changes: Any) -> ResourcePool:
    """Change a pool's description. Total cards never drop below the cards leased."""
    locked = ResourcePool.objects.select_for_update().get(pk=pool.pk)
    if locked.status == Status.RETIRED:
        raise ConflictError(gettext("This pool is retired and can no longer change."), code="pool_retired")
    allowed = {"name", "city", "pue", "green_share", "interconnect", "cards"}
    unexpected = set(changes) - allowed
    if unexpected:
        raise ValueError(f"pool_update cannot change {sorted(unexpected)}")
    cards = changes.get("cards")
    if cards is not None and cards < locked.reserved_cards:
        raise ConflictError(
            gettext("%(reserved_cards)s cards of this pool are leased; total cards cannot go below that.")
            % {"reserved_cards": locked.reserved_cards},
            code="cards_in_use",
        )
    for field, value in changes.items():
        setattr(locked, field, value)
    if cards is not None:
        locked.healthy_cards = min(locked.healthy_cards, cards)
    locked.save()
    invalidate_offer_snapshot(locked.pk)
    locked.refresh_from_db(fields=["free_cards"])
    return locked


def _transition(
    *, pool: ResourcePool, to: str, allowed_from: Iterable[str], by: str, reason: str, action: str
) -> ResourcePool:
    locked = ResourcePool.objects.select_for_update().get(pk=pool.pk)
    if locked.status not in allowed_from:
        raise ConflictError(
            gettext("A %(status)s pool cannot become %(to)s; only a pool that is %(join)s can.")
            % {"status": locked.status, "to": to, "join": " or ".join(sorted(allowed_from))},
            code="invalid_transition",
        )
    previous = locked.status
    now = timezone.now()
    locked.status, locked.status_changed_at, locked.status_changed_by = to, now, by
    locked.save(update_fields=["status", "status_changed_at", "status_changed_by"])
    invalidate_offer_snapshot(locked.pk)
    PoolStatusChange.objects.create(
        pool=locked, from_status=previous, to_status=to, changed_by=by, reason=reason, changed_at=now
    )
    audit_record(
        actor=by,
        action=action,
        target=locked,
        organization=locked.provider,
        summary={"from_status": previous, "to_status": to, "reason": reason, "name": locked.name},
    )
    transaction.on_commit(
        lambda: pool_status_changed.send(sender=ResourcePool, pool=locked, from_status=previous, to_status=to)
    )
    return locked


@transaction.atomic
def pool_approve(*, pool: ResourcePool, by: str, reason: str = "") -> ResourcePool:
    """An operator admits a pending pool, or lifts a suspension."""
    return _transition(
        pool=pool,
        to=Status.ACTIVE,
        allowed_from={Status.PENDING, Status.SUSPENDED},
        by=by,
        reason=reason,
        action=AuditEvent.Action.POOL_APPROVE,
    )


@transaction.atomic
def pool_suspend(*, pool: ResourcePool, by: str, reason: str = "") -> ResourcePool:
    """An operator takes a pool out of the market; it gets no new placements."""
    return _transition(
        pool=pool,
        to=Status.SUSPENDED,
        allowed_from={Status.PENDING, Status.ACTIVE},
        by=by,
        reason=reason,
        action=AuditEvent.Action.POOL_SUSPEND,
    )


@transaction.atomic
def pool_retire(*, pool: ResourcePool, by: str, reason: str = "") -> ResourcePool:
    """The provider withdraws a pool for good, once no lease and no active endpoint holds any of its cards."""
    locked = ResourcePool.objects.select_for_update().get(pk=pool.pk)
    if locked.reserved_cards:
        endpoints = list(
            ModelEndpoint.objects.filter(pool=locked, status=ModelEndpoint.Status.ACTIVE).order_by("model")
        )
        by_endpoints = sum(endpoint.cards for endpoint in endpoints)
        held = []
        if locked.reserved_cards > by_endpoints:
            held.append(f"{locked.reserved_cards - by_endpoints} by scheduled or running leases (wait for them to end)")
        if endpoints:
            models = ", ".join(endpoint.model for endpoint in endpoints)
            held.append(f"{by_endpoints} by its active model endpoints ({models}; retire them first)")
        raise ConflictError(
            gettext("%(reserved_cards)s cards of this pool are held: %(join)s; retire the pool after that.")
            % {"reserved_cards": locked.reserved_cards, "join": "; ".join(held)},
            code="pool_in_use",
        )
    return _transition(
        pool=locked,
        to=Status.RETIRED,
        allowed_from={Status.PENDING, Status.ACTIVE, Status.SUSPENDED},
        by=by,
        reason=reason,
        action=AuditEvent.Action.POOL_RETIRE,
    )


@transaction.atomic
def pool_heartbeat(*, pool: ResourcePool, healthy_cards: int, observed_at: datetime) -> ResourcePool:
    """Record what the provider's agent saw. An older heartbeat than the last one is
    kept in the history but does not overwrite the newer state."""
    now = timezone.now()
    if observed_at > now + timedelta(seconds=settings.POOL_HEARTBEAT_MAX_SKEW_SECONDS):
        raise ApplicationError(
            gettext("observed_at %(isoformat)s is in the future; check the agent's clock (server time %(isoformat2)s).")
            % {"isoformat": observed_at.isoformat(), "isoformat2": now.isoformat()},
            code="heartbeat_in_future",
            fields={"observed_at": [{"code": "in_future", "message": "In the future."}]},
        )
    locked = ResourcePool.objects.select_for_update().get(pk=pool.pk)
    if healthy_cards > locked.cards:
        raise ApplicationError(
            gettext("healthy_cards %(healthy_cards)s is more than the pool's %(cards)s cards.")
            % {"healthy_cards": healthy_cards, "cards": locked.cards},
            code="too_many_healthy_cards",
            fields={"healthy_cards": [{"code": "max_value", "message": f"At most {locked.cards}."}]},
        )
    if locked.status == Status.RETIRED:
        raise ConflictError(gettext("This pool is retired; its agent should stop reporting."), code="pool_retired")
    Heartbeat.objects.bulk_create(
        [Heartbeat(pool=locked, healthy_cards=healthy_cards, observed_at=observed_at)], ignore_conflicts=True
    )
    if locked.last_heartbeat_at is None or observed_at > locked.last_heartbeat_at:
        locked.healthy_cards, locked.last_heartbeat_at = healthy_cards, observed_at
        locked.save(update_fields=["healthy_cards", "last_heartbeat_at"])
        invalidate_offer_snapshot(locked.pk)
        locked.refresh_from_db(fields=["free_cards"])
    return locked


# select_for_update().filter(pk__in=...).order_by("pk") as plain SQL: every order and capacity write
# takes these locks, and compiling the ORM's query cost more than running it.
_POOL_ROWS = Rows(ResourcePool)
_LOCK_SQL = (
    f"SELECT {_POOL_ROWS.columns} FROM {ResourcePool._meta.db_table} WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE"  # noqa: S608
)


def pools_lock(pool_ids: Iterable[Any]) -> list[ResourcePool]:
    """Lock pools in primary-key order, the one order every writer uses."""
    return _POOL_ROWS.fetch(_LOCK_SQL, [[str(pool_id) for pool_id in pool_ids]])


@transaction.atomic
def pool_reserve_cards(*, pool: ResourcePool, cards: int, now: datetime | None = None) -> ResourcePool:
    """Hold ``cards`` for a lease. Refused unless the pool is active, fresh and has them free."""
    if cards <= 0:
        raise ValueError("reserve a positive number of cards")
    (locked,) = pools_lock([pool.pk])
    if locked.status != Status.ACTIVE:
        raise RuleViolation(
            gettext("Pool %(pk)s is %(status)s, not active.") % {"pk": locked.pk, "status": locked.status},
            code="no_capacity",
        )
    if pool_is_stale(locked, now):
        raise RuleViolation(
            gettext("Pool %(pk)s has not sent a heartbeat lately.") % {"pk": locked.pk}, code="no_capacity"
        )
    if locked.free_cards < cards:
        raise RuleViolation(
            gettext("Pool %(pk)s has %(free_cards)s free cards, fewer than %(cards)s.")
            % {"pk": locked.pk, "free_cards": locked.free_cards, "cards": cards},
            code="no_capacity",
        )
    invalidate_offer_snapshot(locked.pk, reserved_cards=F("reserved_cards") + cards)
    locked.refresh_from_db(fields=["reserved_cards", "free_cards"])
    return locked


@transaction.atomic
def pool_release_cards(*, pool: ResourcePool, cards: int) -> ResourcePool:
    """Give back cards a lease held. The database refuses to go below zero."""
    if cards <= 0:
        raise ValueError("release a positive number of cards")
    (locked,) = pools_lock([pool.pk])
    if locked.reserved_cards < cards:
        raise ConflictError(
            gettext("Pool %(pk)s holds %(reserved_cards)s reserved cards; cannot release %(cards)s.")
            % {"pk": locked.pk, "reserved_cards": locked.reserved_cards, "cards": cards},
            code="release_exceeds_reserved",
        )
    invalidate_offer_snapshot(locked.pk, reserved_cards=F("reserved_cards") - cards)
    locked.refresh_from_db(fields=["reserved_cards", "free_cards"])
    return locked


@transaction.atomic
def pool_edit(*, pool: ResourcePool, by: str, **changes: Any) -> ResourcePool:
    """One PATCH: description changes apply now, price changes become a new version."""
    price_fields = {"price_per_card_hour", "time_of_use", "token_prices", "effective_from"}
    prices = {field: changes.pop(field) for field in list(changes) if field in price_fields}
    if changes:
        pool = pool_update(pool=pool, by=by, **changes)
    if prices:
        price_plan_create(pool=pool, by=by, **prices)
    return pool


@transaction.atomic
def price_plan_publish(
    *, pool: ResourcePool, by: str, dry_run: bool = False, **prices: Any
) -> tuple[PricePlan, list[dict[str, Any]]]:
    """A provider's new price version (with ``dry_run``, the version as it would be made, not
    saved) and the leases it reaches, with the change in their expected cost (the effect hooks)."""
    plan = price_plan_create(pool=pool, by=by, dry_run=dry_run, **prices)
    return plan, [effect for hook in hooks.PRICE_EFFECT_HOOKS for effect in hook(plan)]
