"""The offers list (``GET /api/v1/offers/``) served from a per-pool snapshot kept in this process.

What an offer shows changes only when its pool's price versions, capacity, heartbeat,
status or description change, and every such write marks the pool in the same
transaction (``pools.services.invalidate_offer_snapshot`` sets ``offer_version`` to the
writing transaction's id). Each request asks PostgreSQL, in one indexed query, which
pools carry a version at or after the oldest transaction that was still running when
this process last looked (``pg_snapshot_xmin``): a transaction older than that had
committed (or aborted) before the last look, so its changes were already read. Only
those pools whose version differs from the one held are read again, as plain rows.
What depends on the clock is worked out per request: the price version in force and
the hour's price and band, the next cheaper window, and whether the last heartbeat is
still fresh (a pool goes stale without any write).

The costs this avoids (docs/benchmarks.md): the correlated ``price_now`` subquery
evaluated in ``WHERE`` and again in ``COUNT``, full rows of four tables fetched and
decoded, 200 model instances and a DRF serializer per offer, and the reference cycles
they leave for the garbage collector. The response is the same, field for field, as
``OfferSerializer`` over ``selectors.offers_list`` (tests/marketplace/test_offer_snapshot.py).

Deposited card-hours (``capacity.bank_capacity``, the compute bank) are not held: they come and
go with their deposits' hours, without any write, so each request reads them (one query, two
when some deposit is open) and passes them in. A pool whose own cards are all taken is offered
when it has deposited cards free (``bank_cards``), as ``selectors.offers_list(also_pools=...)``
offers it.
"""

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, NamedTuple

from django.db import connection
from django.utils import timezone
from rest_framework import serializers

from core.timezones import local_zone
from marketplace.serializers import OfferSerializer
from orbit.reference_data import HUB_CODE as ORBIT_HUB
from pools.models import ResourcePool
from pools.selectors import fresh_after
from pools.serializers import TokenPricesField
from pools.tariffs import hour_bands, hourly_kwh_prices, local_hour, next_cheaper_window

# The serializer's own fields render each value, so the wire format cannot drift from it.
_FIELDS = OfferSerializer().fields
_TOKEN_PRICES = TokenPricesField()
# The fields as OfferSerializer orders them; the clock-dependent ones are filled per request.
_STATIC_HEAD = tuple(OfferSerializer.Meta.fields[: OfferSerializer.Meta.fields.index("interconnect") + 1])

PLAN_MARGIN = timedelta(hours=1)

# One row: the oldest transaction still running, this transaction's own id if it wrote, the
# number of pools, and a digest of (id, version) of every pool in the window since the last
# look; when count and digest match what this process holds, nothing it holds has changed.
_WINDOW_SQL = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
    pg_current_xact_id_if_assigned()::text::bigint,
    (SELECT count(*) FROM pools_resourcepool WHERE hub_id <> %(orbit)s),
    (SELECT md5(coalesce(string_agg(id::text || ':' || offer_version::text, ',' ORDER BY id), ''))
        FROM pools_resourcepool WHERE offer_version >= %(since)s AND hub_id <> %(orbit)s)
"""
# The pools in the window, when the digest says something in it changed.
_CHANGED_SQL = """
SELECT id, offer_version FROM pools_resourcepool WHERE offer_version >= %(since)s AND hub_id <> %(orbit)s
"""


@dataclass(slots=True)
class _Plan:
    effective_from: datetime
    prices: tuple[Decimal, ...]  # per card-hour, by local hour
    shown: tuple[str, ...]  # the same, as the API shows them
    reserved_shown: tuple[str, ...]  # the reserved price (reserved_discount off), as the API shows it
    token_prices: dict[str, Any]  # as the API shows them
    # For the dispatcher (selectors.pool_snapshots): the prices as floats, and the reserved discount.
    floats: tuple[float, ...]
    reserved_discount: Decimal
    # The row as read (effective_from, hour_prices, token_prices, reserved_discount as text): a
    # version read again unchanged is this one, not decoded and shown again (``_load``).
    source: tuple[Any, ...]
    # The next cheaper window from each hour's start, as the API shows it.
    windows: dict[datetime, dict[str, Any] | None] = field(default_factory=dict)

    def window(self, now: datetime) -> dict[str, Any] | None:
        hour_start = now.replace(minute=0, second=0, microsecond=0)
        if hour_start not in self.windows:
            if len(self.windows) > 48:
                self.windows.clear()
            found = next_cheaper_window(self.prices, hour_start)
            self.windows[hour_start] = (
                None
                if found is None
                else {
                    "start_at": _FIELDS["last_heartbeat_at"].to_representation(found.start_at),
                    "end_at": _FIELDS["last_heartbeat_at"].to_representation(found.end_at),
                    "price_per_card_hour": _FIELDS["price_per_card_hour"].to_representation(found.price_per_card_hour),
                }
            )
        return self.windows[hour_start]


@dataclass(slots=True)
class _Pool:
    id: Any
    key: int  # the id as PostgreSQL orders uuids (by their bytes)
    version: int
    active: bool
    provider_id: Any
    hub: str
    region: str
    province: str
    gpu_model: str
    memory_gb: int
    power_watts: int
    free_cards: int
    green_share: Decimal
    pue: Decimal
    last_heartbeat_at: datetime | None
    latency_ms: Mapping[str, int]
    bands: Sequence[str]  # the hub's time-of-use band by local hour
    tariff_kwh: tuple[float, ...]  # the hub's electricity price by local hour, yuan per kWh
    plans: list[_Plan]  # by effective_from, the one in force when read and any later
    head: dict[str, Any]  # the fields before the price, as the API shows them
    heartbeat_shown: str | None

    def plan_at(self, now: datetime) -> _Plan | None:
        in_force = None
        for plan in self.plans:
            if plan.effective_from > now:
                break
            in_force = plan
        return in_force


@dataclass(slots=True)
class Offer:
    """A pool on offer now, with what the filters and ordering read."""

    pool: _Pool
    plan: _Plan
    price_now: Decimal
    latency_ms: int | None


class _Snapshot:
    def __init__(self) -> None:
        self.pools: dict[Any, _Pool] = {}
        self.since: int | None = None  # the oldest transaction that may not have been read
        self.digests: dict[int, str] = {}
        self.generation = 0  # moves on whenever a pool is read again
        # offers_now's selections: (generation, user_region) -> (valid from, valid until, offers)
        self.selections: dict[tuple[int, str | None], tuple[datetime, datetime, list[Offer]]] = {}
        self.ordered: tuple[int, list[_Pool]] = (-1, [])  # pools_held's, by generation
        self.positions: dict[Any, int] = {}  # each pool's place in ``ordered``
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.pools, self.since, self.digests = {}, None, {}
            self.generation, self.selections = self.generation + 1, {}
            self.ordered, self.positions = (-1, []), {}

    def refresh(self) -> None:
        """Read again the pools changed since the last look (hold ``lock``)."""
        since = self.since if self.since is not None else 0
        with connection.cursor() as cursor:
            cursor.execute(_WINDOW_SQL, {"since": since, "orbit": ORBIT_HUB})
            xmin, own, count, digest = cursor.fetchone()
            if self.since is not None and own is None and count == len(self.pools) and digest == self._digest(since):
                self.since = xmin
                return
            cursor.execute(_CHANGED_SQL, {"since": since, "orbit": ORBIT_HUB})
            rows = cursor.fetchall()
        # A transaction that reads after writing (tests do) sees its own changes, which carry
        # its own id: they are read again each time, and it stays in the window.
        changed = [pool_id for pool_id, version in rows if self._differs(pool_id, version, own)]
        new = sum(1 for pool_id in changed if pool_id not in self.pools)
        if self.since is None or len(self.pools) + new != count:
            # The first look, or pools gone (a reset or a test's rollback) or made outside the
            # services (bulk seeding): read every pool.
            self.pools = _load(None)
            self.generation += 1
        elif changed:
            loaded = _load(changed, self.pools)
            self.pools.update(loaded)
            self.generation += 1
            self._reorder(loaded)
        self.digests.clear()
        self.since = min(xmin, own) if own is not None else xmin

    def _reorder(self, loaded: dict[Any, _Pool]) -> None:
        """Put the pools read again in the places of the ones they replace in ``ordered``, as a new
        list (one handed out is never changed); a new pool leaves it to ``pools_held`` to sort."""
        generation, ordered = self.ordered
        if generation != self.generation - 1 or any(pool_id not in self.positions for pool_id in loaded):
            return
        ordered = list(ordered)
        for pool_id, pool in loaded.items():
            ordered[self.positions[pool_id]] = pool
        self.ordered = (self.generation, ordered)

    def _digest(self, since: int) -> str:
        """What ``_WINDOW_SQL`` digests, from the pools held."""
        if since not in self.digests:
            held = sorted((str(pool.id), pool.version) for pool in self.pools.values() if pool.version >= since)
            text = ",".join(f"{pool_id}:{version}" for pool_id, version in held)
            self.digests = {since: hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()}
        return self.digests[since]

    def _differs(self, pool_id: Any, version: int, own: int | None) -> bool:
        held = self.pools.get(pool_id)
        return held is None or held.version != version or version == own


_snapshot = _Snapshot()


def reset_offer_snapshot() -> None:
    """Forget every pool held (tests whose transactions roll back call this)."""
    _snapshot.reset()


class Held(NamedTuple):
    generation: int  # moves on whenever a pool is read again
    pools: list[_Pool]  # every pool on the ground, in id order (as PostgreSQL orders uuids)
    by_id: Mapping[Any, _Pool]


def pools_held() -> Held:
    """Every pool on the ground as the snapshot holds it, brought up to date first (one query when
    nothing changed): what the dispatcher's snapshots are built from (``selectors.pool_snapshots``).
    The pools held are never changed in place: a pool read again is a new object."""
    with _snapshot.lock:
        _snapshot.refresh()
        if _snapshot.ordered[0] != _snapshot.generation:
            ordered = sorted(_snapshot.pools.values(), key=lambda pool: pool.key)
            _snapshot.ordered = (_snapshot.generation, ordered)
            _snapshot.positions = {pool.id: position for position, pool in enumerate(ordered)}
        return Held(_snapshot.generation, _snapshot.ordered[1], _snapshot.pools)


# The pools' offered facts and their price versions as _load reads them: plain rows, one query each
# (every order changes a pool, which the next request reads again: the ORM's compiling of these two
# queries cost more than running them).
_PLANS_SQL = """
SELECT pp.pool_id, pp.effective_from, pp.hour_prices, pp.token_prices, pp.reserved_discount
FROM pools_priceplan pp JOIN pools_resourcepool p ON p.id = pp.pool_id
WHERE p.hub_id <> %(orbit)s {only}
ORDER BY pp.pool_id, pp.effective_from
"""
_POOLS_SQL = """
SELECT p.id, p.offer_version, p.status, p.name, p.provider_id, o.slug, o.legal_name, p.hub_id, h.region,
    p.province, p.city, p.gpu_model_id, g.memory_gb, g.power_watts, p.cards, p.free_cards, p.green_share,
    p.pue, p.interconnect, p.last_heartbeat_at, h.tariff, h.latency_ms
FROM pools_resourcepool p
JOIN organizations_organization o ON o.id = p.provider_id
JOIN pools_hub h ON h.code = p.hub_id
JOIN pools_gpumodel g ON g.code = p.gpu_model_id
WHERE p.hub_id <> %(orbit)s {only}
"""


def _load(pool_ids: list[Any] | None, held: Mapping[Any, _Pool] | None = None) -> dict[Any, _Pool]:
    """The pools' offered facts as plain rows, with their current and future price versions; a
    version of a pool in ``held`` read again unchanged is the one held (an order changes a pool's
    cards, seldom its prices)."""
    params = {"orbit": ORBIT_HUB, "ids": pool_ids}
    with connection.cursor() as cursor:
        cursor.execute(_PLANS_SQL.format(only="" if pool_ids is None else "AND pp.pool_id = ANY(%(ids)s)"), params)
        plans = cursor.fetchall()
        cursor.execute(_POOLS_SQL.format(only="" if pool_ids is None else "AND p.id = ANY(%(ids)s)"), params)
        rows = cursor.fetchall()
    by_pool: dict[Any, list[_Plan]] = {}
    # A version superseded before this is never in force again (with a margin for clocks).
    read_at = timezone.now() - PLAN_MARGIN
    for pool_id, effective_from, hour_prices_json, token_prices_json, reserved_discount in plans:
        versions = by_pool.setdefault(pool_id, [])
        if versions and versions[-1].effective_from <= read_at and effective_from <= read_at:
            versions.pop()  # superseded before now: never in force again
        source = (effective_from, hour_prices_json, token_prices_json, str(reserved_discount))
        before = held.get(pool_id) if held is not None else None
        kept = next((plan for plan in before.plans if plan.source == source), None) if before is not None else None
        versions.append(kept or _plan(source, reserved_discount))
    loaded: dict[Any, _Pool] = {}
    # A hub's facts, decoded once and shared by its pools (the dispatcher's price curves are
    # cached by their hourly prices: one object compares at once).
    hubs: dict[str, tuple[Any, Sequence[str], tuple[float, ...]]] = {}
    for (
        pool_id,
        version,
        status,
        name,
        provider_id,
        slug,
        legal_name,
        hub,
        region,
        province,
        city,
        gpu_model,
        memory_gb,
        power_watts,
        cards,
        free_cards,
        green_share,
        pue,
        interconnect,
        heartbeat,
        tariff_json,
        latency_json,
    ) in rows:
        if hub not in hubs:
            tariff = json.loads(tariff_json)
            hubs[hub] = (json.loads(latency_json), hour_bands(tariff), hourly_kwh_prices(tariff))
        latency, bands, kwh = hubs[hub]
        values = {
            "pool": pool_id,
            "name": name,
            "provider": slug,
            "provider_name": legal_name,
            "hub": hub,
            "region": region,
            "province": province,
            "city": city,
            "gpu_model": gpu_model,
            "memory_gb": memory_gb,
            "cards": cards,
            "free_cards": free_cards,
            "green_share": green_share,
            "pue": pue,
            "interconnect": interconnect,
        }
        loaded[pool_id] = _Pool(
            id=pool_id,
            key=pool_id.int,
            version=version,
            active=status == ResourcePool.Status.ACTIVE,
            provider_id=provider_id,
            hub=hub,
            region=region,
            province=province,
            gpu_model=gpu_model,
            memory_gb=memory_gb,
            power_watts=power_watts,
            free_cards=free_cards,
            green_share=green_share,
            pue=pue,
            last_heartbeat_at=heartbeat,
            latency_ms=latency,
            bands=bands,
            tariff_kwh=kwh,
            plans=by_pool.get(pool_id, []),
            head={name: _shown(name, values[name]) for name in _STATIC_HEAD},
            heartbeat_shown=_FIELDS["last_heartbeat_at"].to_representation(heartbeat) if heartbeat else None,
        )
    return loaded


def _plan(source: tuple[Any, ...], reserved_discount: Decimal) -> _Plan:
    """A price version from its row, decoded, and its prices as the API shows them."""
    effective_from, hour_prices_json, token_prices_json, _ = source
    hour_prices, token_prices = json.loads(hour_prices_json), json.loads(token_prices_json)
    prices = tuple(Decimal(price) for price in hour_prices)
    return _Plan(
        effective_from=effective_from,
        prices=prices,
        shown=tuple(_FIELDS["price_per_card_hour"].to_representation(price) for price in prices),
        reserved_shown=tuple(
            _FIELDS["reserved_price_per_card_hour"].to_representation(price * (1 - reserved_discount))
            for price in prices
        ),
        token_prices=_TOKEN_PRICES.to_representation(token_prices),
        floats=tuple(float(price) for price in hour_prices),
        reserved_discount=reserved_discount,
        source=source,
    )


def _shown(name: str, value: Any) -> Any:
    field_ = _FIELDS[name]
    if isinstance(field_, serializers.ModelField):  # a generated column (free_cards): reads the object
        return field_.to_representation(SimpleNamespace(**{field_.model_field.attname: value}))
    return field_.to_representation(value)


def offers_now(*, now: datetime, user_region: str | None = None, bank: Mapping[Any, int] | None = None) -> list[Offer]:
    """Active, fresh pools with free cards (their own, or deposited ones in ``bank``:
    ``capacity.bank_capacity``) and a price in force at ``now``, in id order: what
    ``selectors.offers_list(also_pools=bank)`` selects, from the snapshot.

    The selection is kept until the snapshot changes or the clock reaches its end: the next
    local hour, the first heartbeat among those offered to go stale, or the next price version.
    """
    with _snapshot.lock:
        _snapshot.refresh()
        key = (_snapshot.generation, user_region)
        kept = _snapshot.selections.get(key)
        if kept is None or not kept[0] <= now < kept[1]:
            if len(_snapshot.selections) >= 64:
                _snapshot.selections.clear()
            kept = _snapshot.selections[key] = _select(list(_snapshot.pools.values()), now, user_region)
    bank = bank or {}
    return [offer for offer in kept[2] if offer.pool.free_cards > 0 or offer.pool.id in bank]


def _select(pools: list[_Pool], now: datetime, user_region: str | None) -> tuple[datetime, datetime, list[Offer]]:
    fresh = fresh_after(now)
    stale_after = now - fresh
    hour = local_hour(now)
    until = now.astimezone(local_zone()).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    offers = []
    for pool in sorted(pools, key=lambda pool: pool.key):
        for version in pool.plans:
            if version.effective_from > now:
                until = min(until, version.effective_from)
                break
        # Pools without free cards are kept too: deposited cards (per request) may offer them.
        if not pool.active or pool.last_heartbeat_at is None or pool.last_heartbeat_at < fresh:
            continue
        in_force = pool.plan_at(now)
        if in_force is None:
            continue
        until = min(until, pool.last_heartbeat_at + stale_after)
        latency = pool.latency_ms.get(user_region) if user_region else None
        offers.append(Offer(pool, in_force, in_force.prices[hour], latency if isinstance(latency, int) else None))
    return now, until, offers


# The filters of ``filters.OfferFilter``, on an Offer: (name, test).
_FILTERS: dict[str, Any] = {
    "gpu_model": lambda offer, value: offer.pool.gpu_model == value,
    "hub": lambda offer, value: offer.pool.hub == value,
    "region": lambda offer, value: offer.pool.region == value,
    "province": lambda offer, value: offer.pool.province == value,
    "min_free_cards": lambda offer, value: offer.pool.free_cards >= value,
    "min_memory_gb": lambda offer, value: offer.pool.memory_gb >= value,
    "max_price": lambda offer, value: offer.price_now <= value,
    "min_green_share": lambda offer, value: offer.pool.green_share >= value,
}
_ORDERING: dict[str, Any] = {
    "price": lambda offer: offer.price_now,
    "green_share": lambda offer: offer.pool.green_share,
    "free_cards": lambda offer: offer.pool.free_cards,
    # PostgreSQL sorts NULL after every value ascending, before them descending.
    "latency": lambda offer: (offer.latency_ms is None, offer.latency_ms or 0),
}


def offers_filtered(offers: list[Offer], *, filters: Mapping[str, Any], ordering: Sequence[str]) -> list[Offer]:
    """``OfferFilter``'s cleaned values applied; ordered as asked, then by id (price, then id, by default)."""
    for name, test in _FILTERS.items():
        value = filters.get(name)
        if value not in (None, ""):
            offers = [offer for offer in offers if test(offer, value)]
    # In id order already (offers_now): ties keep it.
    for key in reversed(list(ordering) or ["price"]):
        offers.sort(key=_ORDERING[key.lstrip("-")], reverse=key.startswith("-"))
    return offers


def offer_to_dict(offer: Offer, *, now: datetime, bank: Mapping[Any, int] | None = None) -> dict[str, Any]:
    """An offer as ``OfferSerializer`` shows it; ``bank``: the deposited cards free now, by pool."""
    hour = local_hour(now)
    return {
        **offer.pool.head,
        "price_per_card_hour": offer.plan.shown[hour],
        "reserved_price_per_card_hour": offer.plan.reserved_shown[hour],
        "bank_cards": (bank or {}).get(offer.pool.id, 0),
        "currency": "CNY",
        "price_band": offer.pool.bands[hour],
        "next_cheaper_window": offer.plan.window(now),
        "token_prices": offer.plan.token_prices,
        "latency_ms": offer.latency_ms,
        "last_heartbeat_at": offer.pool.heartbeat_shown,
    }
