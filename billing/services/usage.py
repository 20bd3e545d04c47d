"""Usage ingestion (the hot path) and hourly rollups.

``usage_events_ingest`` takes a batch of CloudEvents from a provider and keeps
each good event exactly once: the provider + ``source`` + ``id`` is unique forever
(the events table's primary key ``key``, a digest of the three; one provider's keys
never block nor reveal another's). Per batch it runs a fixed number of queries
whatever its size: lock the batch's leases (an event must fall in its lease's run:
from its start to the earlier of its booked end and its end); COPY the events into
a staging table and, in one statement, insert the new ones with ``ON CONFLICT DO
NOTHING`` and mark the (lease, hour) buckets they fall in due in
``UsageRollupDue`` (the keys that already existed are looked up only when there are
some); sum the card-seconds and tokens of the hours the batch touches and take
back, in the same transaction, what goes over a lease's hourly limits (by the
seconds it ran in the hour). Rollups are rebuilt per (lease, hour) bucket by a
Celery task after commit; Celery beat queues again the buckets still due if that
task is lost.
"""

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, DateTimeField, F, Q, Sum, Value, When
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.cloudevents import GPU_SECONDS, Event, Rejected, parse_event
from billing.metrics import usage_batch_counted
from billing.models import Invoice, UsageEvent, UsageMetric, UsageRollup, UsageRollupDue
from billing.periods import month_of
from marketplace.models import Lease
from marketplace.selectors import max_price_ends
from orbit.reference_data import HUB_CODE as ORBIT_HUB
from pools.models import PricePlan
from pools.selectors import Versions, plan_in_force, plans_by_pool

FUTURE_LIMIT = timedelta(minutes=5)
SECONDS_PER_HOUR = 3600

Bucket = tuple[UUID, datetime]  # (lease id, start of the UTC hour)


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    buckets: set[tuple[UUID, int]] = field(default_factory=set)  # (lease, hours since the epoch)

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def reject(self, index: int, event_id: Any, code: str, message: str) -> None:
        self.errors.append(
            {"index": index, "id": event_id if isinstance(event_id, str) else None, "code": code, "message": message}
        )


def _hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


def usage_events_ingest(*, provider_id: Any, events: Sequence[Any], now: datetime | None = None) -> IngestResult:
    """Check and store a batch of usage events; the good rest of a batch is kept."""
    now = now or timezone.now()
    result = IngestResult()
    parsed: list[Event] = []
    in_batch: dict[tuple[str, str], str] = {}
    for index, raw in enumerate(events):
        try:
            event = parse_event(index, raw)
        except Rejected as exc:
            result.reject(index, raw.get("id") if isinstance(raw, dict) else None, exc.code, exc.message)
            continue
        key = (event.source, event.id)
        if key in in_batch:
            if in_batch[key] == event.digest:
                result.duplicates += 1
            else:
                result.reject(index, event.id, "conflict", "Another event of this batch has this source and id.")
            continue
        in_batch[key] = event.digest
        parsed.append(event)

    with transaction.atomic():
        fresh, runs = _check_leases(parsed, provider_id=provider_id, now=now, result=result)
        known, marked = _insert(fresh, provider_id=provider_id, now=now)
        new = fresh  # unless some keys were stored before (a replay, a conflict)
        if known:
            new = []
            for event in fresh:
                digest = known.get((event.source, event.id))
                if digest is None:
                    new.append(event)
                elif digest == event.digest:
                    result.duplicates += 1
                else:
                    result.reject(
                        event.index,
                        event.id,
                        "conflict",
                        "An event with this source and id was stored with other content.",
                    )
        excess = _over_hourly_limits(new, runs, now=now)
        if excess:
            _delete([event for event, _ in excess], provider_id=provider_id)
            for event, limit in excess:
                if event.type == GPU_SECONDS:
                    result.reject(
                        event.index,
                        event.id,
                        "hourly_limit_exceeded",
                        f"The lease would report more than {limit:,} card-seconds in this hour: its "
                        f"{runs[event.lease_id].cards} cards x the seconds it ran in the hour; you cannot bill "
                        "more than you leased.",
                    )
                else:
                    result.reject(
                        event.index,
                        event.id,
                        "hourly_token_limit_exceeded",
                        f"The lease would report more than {limit:,} tokens in this hour: what its "
                        f"{runs[event.lease_id].cards} cards can process in the seconds it ran.",
                    )
        dropped = {event.index for event, _ in excess}
        over = _over_budget(_without(new, dropped), runs)
        if over:
            _delete([event for event, _ in over], provider_id=provider_id)
            for event, budget in over:
                result.reject(
                    event.index,
                    event.id,
                    "token_budget_exceeded",
                    f"This batch token order was placed for {budget:,} tokens; it cannot bill more.",
                )
            dropped |= {event.index for event, _ in over}
        kept = _without(new, dropped)
        result.accepted += len(kept)
        result.buckets.update({(event.lease_id, event.hour) for event in kept})
        if dropped:
            # A bucket this batch marked due whose new events were all taken back has nothing new
            # to roll up: unmarked, as if never marked (a rollup would touch its month's invoices).
            _unmark(
                {(event.lease_id, event.hour) for event in new if event.index in dropped} - result.buckets,
                marked=marked,
            )
        if result.buckets:
            # Marked due by the insert; queued after commit.
            buckets = [(lease_id, _hour_start(hour)) for lease_id, hour in sorted(result.buckets)]
            # The events are stored whether or not the broker answers: a lost task is queued
            # again from UsageRollupDue, so a failure to queue it is logged, not raised.
            transaction.on_commit(lambda: queue_rollups(buckets), robust=True)
        transaction.on_commit(partial(usage_batch_counted, result), robust=True)
    result.errors.sort(key=lambda error: error["index"])
    return result


def _without(events: list[Event], indexes: set[int]) -> list[Event]:
    return [event for event in events if event.index not in indexes] if indexes else events


def queue_rollups(buckets: list[Bucket], *, chunk: int = 500) -> None:
    from billing.tasks import usage_rollup

    for start in range(0, len(buckets), chunk):
        usage_rollup.delay([[str(lease_id), hour.isoformat()] for lease_id, hour in buckets[start : start + chunk]])


def _mark_due(buckets: list[Bucket], *, now: datetime) -> None:
    """Mark the buckets due for a rollup (a bucket already due keeps its first time)."""
    mark = uuid4()
    UsageRollupDue.objects.bulk_create(
        [UsageRollupDue(lease_id=lease_id, hour=hour, batch=mark, marked_at=now) for lease_id, hour in buckets],
        update_conflicts=True,
        unique_fields=["lease", "hour"],
        update_fields=["batch"],
    )


def usage_rollups_overdue(*, now: datetime, limit: int = 50_000) -> list[Bucket]:
    """Buckets marked due longer ago than a rollup takes: their task was lost (or is very late)."""
    before = now - timedelta(seconds=settings.USAGE_ROLLUP_REQUEUE_SECONDS)
    return list(
        UsageRollupDue.objects.filter(marked_at__lte=before)
        .order_by("marked_at")
        .values_list("lease_id", "hour")[:limit]
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """What ingest checks an event against: the lease's cards and its run."""

    cards: int
    started_at: datetime | None
    until: datetime  # the end of its run: the earliest of its end_at, when it ended and its max_price end
    tokens_per_second: int  # of one card: a token order's endpoint's throughput per card
    model: str | None = None  # a token order's: the model its endpoint serves (its lease bills tokens only)
    budget: int | None = None  # a batch token order's: the tokens it was ordered for, at most
    in_orbit: bool = False  # a satellite's: its agent reports at its next contact, inside the lateness window

    def seconds_in(self, hour_start: datetime, now: datetime) -> int:
        """Whole seconds the lease ran in the hour starting at ``hour_start`` (so far, if it runs)."""
        if self.started_at is None:
            return 0
        ran = min(hour_start + timedelta(hours=1), self.until, now) - max(hour_start, self.started_at)
        return max(math.ceil(ran.total_seconds()), 0)


def _run(
    cards: int,
    started_at: datetime | None,
    ended_at: datetime | None,
    end_at: datetime,
    model: str | None,
    throughput: int | None,
    deadline: datetime | None,
    input_tokens: int | None,
    output_tokens: int | None,
    hub: str,
) -> _Run:
    """A token order's lease is capped by its endpoint's throughput (a batch job also by the tokens
    it was ordered for); a card lease takes no tokens. A satellite's usage may come late."""
    budget = None
    if model is not None and deadline is not None:  # a batch job, not a pay-as-you-go account
        budget = (input_tokens or 0) + (output_tokens or 0)
    return _Run(cards, started_at, min(end_at, ended_at or end_at), throughput or 0, model, budget, hub == ORBIT_HUB)


def _check_leases(
    events: list[Event], *, provider_id: Any, now: datetime, result: IngestResult
) -> tuple[list[Event], dict[UUID, _Run]]:
    """The lease must be the calling provider's, and the time within its run (its start to the
    earliest of its end_at, its end and its max_price end, give or take the clock-skew allowance).
    Returns the events kept and the run of each lease."""
    lease_ids = sorted({event.lease_id for event in events})
    # Locked in primary-key order (the lease rows only, not their pools): concurrent batches for
    # one lease take turns, so the hourly sums below count every committed event.
    leases = Lease.objects.filter(pk__in=lease_ids, provider_id=provider_id)
    rows = list(
        leases.select_for_update(of=("self",))
        .order_by("pk")
        .values_list(
            "id",
            "cards",
            "started_at",
            "ended_at",
            "end_at",
            "endpoint__model",
            "endpoint__throughput_per_card",
            "order__deadline",
            "order__input_tokens",
            "order__output_tokens",
            "pool__hub_id",
        )
    )
    # A running lease whose price passed its max_price ends at that second (the beat ends it within
    # a minute): usage after it is refused now, not billed above the buyer's ceiling meanwhile.
    ceilings = max_price_ends(leases=leases.filter(status=Lease.Status.RUNNING), now=now)
    runs = {row[0]: _run(row[1], row[2], ceilings.get(row[0], row[3]), *row[4:]) for row in rows}
    grace = timedelta(seconds=settings.USAGE_TIME_GRACE_SECONDS)
    latest, orbit_earliest = now + FUTURE_LIMIT, now - timedelta(hours=settings.ORBIT_USAGE_LATENESS_HOURS)
    kept = []
    for event in events:
        run = runs.get(event.lease_id)
        if run is None:
            result.reject(event.index, event.id, "unknown_lease", "No lease with this id runs on your pools.")
            continue
        cards = run.cards
        if event.time > latest:
            result.reject(event.index, event.id, "time_in_future", "'time' is more than 5 minutes in the future.")
        elif run.started_at is None:
            result.reject(event.index, event.id, "lease_not_started", "This lease has not started.")
        elif run.in_orbit and event.time < orbit_earliest:
            result.reject(
                event.index,
                event.id,
                "too_late",
                f"Usage from orbit is accepted up to {settings.ORBIT_USAGE_LATENESS_HOURS} hours after its 'time'.",
            )
        elif not run.started_at - grace <= event.time <= run.until + grace:
            result.reject(
                event.index,
                event.id,
                "outside_lease",
                "'time' is outside the lease's run (from its start to its booked end, or its end if earlier).",
            )
        elif run.model is None and event.type != GPU_SECONDS:
            result.reject(
                event.index,
                event.id,
                "tokens_on_card_lease",
                "A card lease is billed by card-seconds only; send tokens against a token order (POST token-orders/).",
            )
        elif run.model is not None and event.type == GPU_SECONDS:
            result.reject(
                event.index, event.id, "card_seconds_on_token_order", "A token order is billed by tokens only."
            )
        elif run.model is not None and event.model != run.model:
            result.reject(
                event.index, event.id, "model_not_served", f"This token order's endpoint serves {run.model} only."
            )
        elif event.cards is not None and event.cards > cards:
            result.reject(event.index, event.id, "cards_exceed_lease", f"The lease has {cards} cards.")
        elif event.quantity is not None and event.quantity > cards * SECONDS_PER_HOUR:
            result.reject(
                event.index,
                event.id,
                "quantity_implausible",
                f"One event may report at most {cards * SECONDS_PER_HOUR:,} card-seconds (the lease's cards x 1 hour).",
            )
        else:
            kept.append(event)
    return kept, runs


def _over_hourly_limits(events: list[Event], runs: dict[UUID, _Run], *, now: datetime) -> list[tuple[Event, int]]:
    """The new events that take a lease past its limits in an hour, later events of the batch
    first, each with the limit it passed: card-seconds up to its cards x the seconds it ran in
    the hour (plus the clock-skew allowance, at most 3,600) x (1 + the tolerance); tokens up to
    its endpoint's throughput per card x its cards x those seconds (a token order). Runs after the
    insert, so the sums count this batch too; the leases are locked, so they count every other
    committed batch and no concurrent one. One query whatever the batch's size."""
    if not events:
        return []
    hours = sorted({event.hour for event in events})
    totals = {
        (lease_id, bucket): (seconds or 0, tokens or 0)
        for lease_id, bucket, seconds, tokens in UsageEvent.objects.filter(
            lease_id__in={event.lease_id for event in events},
            time__gte=_hour_start(hours[0]),
            time__lt=_hour_start(hours[-1] + 1),
        )
        .annotate(bucket=TruncHour("time", tzinfo=UTC))
        .values_list("lease_id", "bucket")
        .annotate(seconds=Sum("quantity"), tokens=Sum(F("input_tokens") + F("output_tokens")))
    }
    allowance = settings.USAGE_TIME_GRACE_SECONDS
    tolerance = 1 + settings.USAGE_HOURLY_TOLERANCE
    by_bucket: dict[tuple[UUID, int, bool], list[Event]] = defaultdict(list)
    for event in events:
        by_bucket[(event.lease_id, event.hour, event.type == GPU_SECONDS)].append(event)
    excess: list[tuple[Event, int]] = []
    for (lease_id, hour, is_seconds), bucket_events in by_bucket.items():
        run, start = runs[lease_id], _hour_start(hour)
        seconds = min(SECONDS_PER_HOUR, run.seconds_in(start, now) + allowance)
        if is_seconds:
            limit = int(run.cards * seconds * tolerance)
            total = totals.get((lease_id, start), (0, 0))[0]
            sizes = [event.quantity or 0 for event in bucket_events]
        else:
            limit = int(run.tokens_per_second * run.cards * seconds)
            total = totals.get((lease_id, start), (0, 0))[1]
            sizes = [(event.input_tokens or 0) + (event.output_tokens or 0) for event in bucket_events]
        if total <= limit:
            continue
        used = total - sum(sizes)
        for event, size in zip(bucket_events, sizes, strict=True):  # in batch order: the first ones fit
            if used + size > limit:
                excess.append((event, limit))
            else:
                used += size
    return excess


def _over_budget(events: list[Event], runs: dict[UUID, _Run]) -> list[tuple[Event, int]]:
    """The new token events that take a batch token order past the tokens it was ordered for, later
    events of the batch first. Runs after the insert, under the leases' locks, as the hourly limits."""
    if all(run.budget is None for run in runs.values()):
        return []
    budgeted = {event.lease_id for event in events if runs[event.lease_id].budget is not None}
    if not budgeted:
        return []
    totals = dict(
        UsageEvent.objects.filter(lease_id__in=budgeted)
        .values_list("lease_id")
        .annotate(tokens=Sum(F("input_tokens") + F("output_tokens")))
    )
    excess: list[tuple[Event, int]] = []
    for lease_id in budgeted:
        budget = runs[lease_id].budget or 0
        if (totals.get(lease_id) or 0) <= budget:
            continue
        mine = [event for event in events if event.lease_id == lease_id]
        sizes = [(event.input_tokens or 0) + (event.output_tokens or 0) for event in mine]
        used = totals[lease_id] - sum(sizes)
        for event, size in zip(mine, sizes, strict=True):  # in batch order: the first ones fit
            if used + size > budget:
                excess.append((event, budget))
            else:
                used += size
    return excess


_STAGE_COLUMNS = (
    "key, source, event_id, digest, type, lease_id, time, quantity, cards, model, input_tokens, output_tokens, data"
)

# One statement: the new events go in (a key this provider already used is skipped by the primary
# key of the events' hash partition), the (lease, hour) buckets they fall in are marked due for a
# rollup (a bucket already due keeps its first time), and the staged keys not inserted come back,
# with the buckets this batch marked first (unmarked again if all its events there are taken back).
# In key order: two batches of a provider with keys in common (on different leases, so the leases'
# locks do not order them) wait for each other's keys in one order, never in a deadlock.
_INSERT = """
WITH new AS (
    INSERT INTO billing_usageevent (key, digest, source, event_id, type, lease_id, provider_id, time, quantity, cards,
        model, input_tokens, output_tokens, data, received_at)
    SELECT key, digest, source, event_id, type, lease_id, %(provider)s, time, quantity, cards, model, input_tokens,
        output_tokens, data, %(now)s
    FROM usage_stage
    ORDER BY key
    ON CONFLICT (key) DO NOTHING
    RETURNING key, lease_id, time
), due AS (
    INSERT INTO billing_usagerollupdue (lease_id, hour, batch, marked_at)
    SELECT DISTINCT lease_id, date_trunc('hour', time, 'UTC'), %(batch)s::uuid, %(now)s::timestamptz FROM new
    ORDER BY 1, 2
    ON CONFLICT (lease_id, hour) DO UPDATE SET batch = EXCLUDED.batch
    RETURNING lease_id, hour, xmax = 0 AS inserted
)
SELECT s.source, s.event_id, NULL::uuid, NULL::timestamptz FROM usage_stage s
WHERE NOT EXISTS (SELECT FROM new n WHERE n.key = s.key)
UNION ALL
SELECT NULL, NULL, lease_id, hour FROM due WHERE inserted
"""

# The events stored under the keys of those not inserted: each key's owner, to tell a hash
# collision (another source and id under the same 16 bytes) from a replay or a conflict.
_STORED = """
SELECT d.source, d.event_id, e.digest, e.source = d.source AND e.event_id = d.event_id AND e.provider_id = %(provider)s
FROM unnest(%(sources)s::text[], %(ids)s::text[]) AS d (source, event_id)
JOIN billing_usageevent e ON e.key = billing_usage_event_key(%(provider)s, d.source, d.event_id)
"""

COLLISION = "0" * 32  # never a digest a stored event can be compared equal to (see ``_insert``)


def event_key(provider_id: Any, source: str, event_id: str) -> str:
    """An event's unique key as 32 hex digits: what SQL ``billing_usage_event_key`` computes
    (``tests/billing/test_usage_once.py`` holds them to it). Computed here on the hot path: the
    web processes hash the batch's keys for less than the database's SQL function costs."""
    return hashlib.sha256(f"{provider_id}:{len(source)}:{source}{event_id}".encode()).hexdigest()[:32]


def _rows(events: list[Event], provider_id: Any) -> Iterable[tuple[Any, ...]]:
    provider = str(provider_id)
    for e in events:
        yield (
            hashlib.sha256(f"{provider}:{len(e.source)}:{e.source}{e.id}".encode()).hexdigest()[:32],  # event_key
            e.source,
            e.id,
            e.digest,
            e.type,
            e.subject,
            e.time_text,
            None if e.quantity is None else str(e.quantity),  # text, as the rest: psycopg's dumpers cost more
            e.cards,
            e.model,
            e.input_tokens,
            e.output_tokens,
            orjson.dumps(e.data).decode(),
        )


def _insert(
    events: list[Event], *, provider_id: Any, now: datetime
) -> tuple[dict[tuple[str, str], str], set[tuple[Any, datetime]]]:
    """Insert the events whose key is new to this provider, and mark their buckets due, in one
    statement: each event is written once, its uniqueness kept by the events table itself.
    Returns the digest stored for each key the provider already used (those events were not
    inserted), and the buckets this batch marked due that were not due before. Keys are per
    provider: one provider's events never block, nor reveal, another's."""
    if not events:
        return {}, set()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS usage_stage (key uuid, source text, event_id text, digest uuid, "
            "type text, lease_id uuid, time timestamptz, quantity numeric, cards integer, model text, "
            "input_tokens bigint, output_tokens bigint, data jsonb) ON COMMIT DELETE ROWS"
        )
        # Empty at commit, but not between two batches of one transaction: an event of an earlier
        # batch taken back over the hourly limit would otherwise be stored by this one.
        cursor.execute("DELETE FROM usage_stage")
        with cursor.cursor.copy(f"COPY usage_stage ({_STAGE_COLUMNS}) FROM STDIN") as copy:
            for row in _rows(events, provider_id):
                copy.write_row(row)
        cursor.execute(_INSERT, {"provider": provider_id, "now": now, "batch": uuid4()})
        skipped, marked = [], set()
        for source, event_id, lease_id, hour in cursor.fetchall():
            if source is None:
                marked.add((lease_id, hour))
            else:
                skipped.append((source, event_id))
        if not skipped:
            return {}, marked
        # A new statement: it sees the events a concurrent batch committed while this one waited.
        cursor.execute(
            _STORED,
            {
                "provider": provider_id,
                "sources": [source for source, _ in skipped],
                "ids": [event_id for _, event_id in skipped],
            },
        )
        # A key held by another (provider, source, id) is a collision of 16 bytes of SHA-256: refused
        # as a conflict, never stored over the other event.
        # A key skipped but no longer found (its event taken back since) is refused the same way.
        known = dict.fromkeys(skipped, COLLISION)
        known.update(
            ((source, event_id), digest.hex if same else COLLISION)
            for source, event_id, digest, same in cursor.fetchall()
        )
        return known, marked


def _unmark(buckets: set[tuple[UUID, int]], *, marked: set[tuple[Any, datetime]]) -> None:
    """Remove the due marks of these (lease, hours since the epoch) buckets that this batch made."""
    unmark = sorted(
        ((lease_id, hour) for lease_id, hour in marked if (lease_id, int(hour.timestamp()) // 3600) in buckets),
        key=str,
    )
    if unmark:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM billing_usagerollupdue d USING unnest(%s::uuid[], %s::timestamptz[]) AS u (lease_id, hour)"
                " WHERE d.lease_id = u.lease_id AND d.hour = u.hour",
                [[lease_id for lease_id, _ in unmark], [hour for _, hour in unmark]],
            )


def _delete(events: list[Event], *, provider_id: Any) -> None:
    """Take back events this transaction inserted for the provider (over an hourly limit), in one
    statement, by their keys."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM billing_usageevent WHERE key IN (SELECT billing_usage_event_key(%(provider)s, d.source,"
            " d.event_id) FROM unnest(%(sources)s::text[], %(ids)s::text[]) AS d (source, event_id))",
            {
                "provider": provider_id,
                "sources": [event.source for event in events],
                "ids": [event.id for event in events],
            },
        )


# --- rollups -----------------------------------------------------------------


def invoices_for_usage(*, months: set[tuple[Any, tuple[datetime, datetime]]]) -> set[tuple[Any, datetime]]:
    """Make sure draft invoices will bill usage of these (buyer, month)s, and say which months are
    closed, as (buyer, month start).

    A month's own invoice bills it while a draft; once that invoice is finalized,
    the draft of the current month bills what arrives later, as an adjustment.
    Month-end settlement then finds every invoice to finalize among the drafts,
    without scanning the usage. The months' invoices stay share-locked until
    commit (taken in id order, as finalizing takes them): none can be finalized
    while this transaction writes their usage.
    """
    invoices = {}
    for buyer_id, (start, end) in sorted(months, key=str):
        invoice, _ = Invoice.objects.get_or_create(buyer_id=buyer_id, period_start=start, defaults={"period_end": end})
        invoices[invoice.pk] = [buyer_id, start, invoice.status]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status FROM billing_invoice WHERE id = ANY(%s) ORDER BY id FOR SHARE", [sorted(invoices)]
        )
        for pk, status in cursor.fetchall():  # as it stands once locked
            invoices[pk][2] = status
    closed = {(buyer_id, start) for buyer_id, start, status in invoices.values() if status != Invoice.Status.DRAFT}
    if closed:
        current = month_of(timezone.now())
        for buyer_id in sorted({buyer_id for buyer_id, _ in closed}, key=str):
            Invoice.objects.get_or_create(
                buyer_id=buyer_id, period_start=current[0], defaults={"period_end": current[1]}
            )
    return closed


def lease_plan_at(lease: tuple[Any, datetime], versions: Versions, at: datetime) -> Any:
    """The version that prices a lease's usage at ``at``: the one it was placed on, in its booked
    hours (``lease`` is its locked version id and its lock's end, ``Lease.price_locked_until``: a
    booking's end, a pay-as-you-go token account's opening); after them, ``plan_in_force``."""
    locked_plan, locked_until = lease
    return locked_plan if at < locked_until else plan_in_force(versions, at)


def _version_start(
    leases: dict[UUID, tuple[Any, ...]], plans: dict[Any, Versions], start: datetime, end: datetime
) -> Case | Value:
    """For each event, the latest moment inside an hour of [start, end), at or before the event,
    at which the lease's price version changes (null if none did): the rows of an hour are split
    there. A lease's version changes where its price lock ends (if the version in force then is
    another) and, after that, where a version reaches running leases.

    There are no such moments in most rollups, and then the events are summed by hour alone.
    """
    starts = []
    for lease_id, (_, pool_id, _, _, locked_plan, locked_until) in leases.items():
        versions = plans.get(pool_id, [])
        moments = [at for at, _, _ in versions if at > locked_until]
        if plan_in_force(versions, locked_until) != locked_plan:
            moments.append(locked_until)
        starts += [(at, lease_id) for at in moments if start < at < end and at != _hour_floor(at)]
    if not starts:
        return Value(None, output_field=DateTimeField())
    starts.sort(key=lambda moment: moment[0], reverse=True)  # the latest that applies wins
    whens = [When(Q(lease_id=lease_id, time__gte=at), then=Value(at)) for at, lease_id in starts]
    return Case(*whens, default=Value(None), output_field=DateTimeField())


def _hour_floor(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def usage_rollup_buckets(*, buckets: Iterable[Bucket]) -> int:
    """Recompute the rollup rows of these (lease, hour) buckets from the raw events.

    Idempotent: it sets each bucket to what the raw events say, so running it
    twice, late or concurrently gives the same rows. Returns the rows written.
    """
    wanted = {(lease_id, hour.astimezone(UTC)) for lease_id, hour in buckets}
    if not wanted:
        return 0
    with transaction.atomic():
        return _roll_up(wanted)


def _roll_up(wanted: set[Bucket]) -> int:
    # The leases first, locked in primary-key order as ingest locks them: two rollups of a
    # bucket take turns, and each sums every event committed before it (no stale total wins).
    leases = {
        row[0]: row
        for row in Lease.objects.select_for_update(of=("self",))
        .filter(pk__in={lease_id for lease_id, _ in wanted})
        .order_by("pk")
        .values_list("id", "pool_id", "buyer_id", "provider_id", "price_plan_id", "price_locked_until")
    }
    # Read the marks before the events: an ingest that commits after this line marks its
    # buckets again (another batch), so its mark survives the delete below.
    marks = [
        mark
        for mark in UsageRollupDue.objects.filter(
            lease_id__in={lease_id for lease_id, _ in wanted}, hour__in={hour for _, hour in wanted}
        ).values_list("lease_id", "hour", "batch")
        if mark[:2] in wanted
    ]
    hours = sorted(hour for _, hour in wanted)
    first, until = hours[0], hours[-1] + timedelta(hours=1)
    pool_ids = sorted({row[1] for row in leases.values()}, key=str)
    # A new price version locks its pool until it commits, and marks for a rollup the hours it
    # reprices (``usage_hours_reprice``): this rollup reads the versions either after that
    # commit, or before it and then commits first, so the version's marks see these rows.
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM pools_resourcepool WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE", [pool_ids])
    plans = plans_by_pool(pool_ids=pool_ids, until=until)
    sums = (
        UsageEvent.objects.filter(lease_id__in=leases, time__gte=first, time__lt=until)
        .annotate(bucket=TruncHour("time", tzinfo=UTC), since=_version_start(leases, plans, first, until))
        .values_list("lease_id", "bucket", "since", "type", "model")
        .annotate(seconds=Sum("quantity"), inputs=Sum("input_tokens"), outputs=Sum("output_tokens"), events=Count("*"))
    )
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for lease_id, bucket, since, event_type, model, seconds, inputs, outputs, events in sums:
        if (lease_id, bucket) not in wanted:
            continue
        _, pool_id, _, _, locked_plan, locked_until = leases[lease_id]
        at = max(bucket, since) if since else bucket
        plan_id = lease_plan_at((locked_plan, locked_until), plans.get(pool_id, []), at)
        if event_type == GPU_SECONDS:
            metrics = [(UsageMetric.GPU_SECONDS, "", seconds)]
        else:
            metrics = [(UsageMetric.INPUT_TOKENS, model, inputs), (UsageMetric.OUTPUT_TOKENS, model, outputs)]
        for metric, name, quantity in metrics:
            total = totals.setdefault((lease_id, metric, name, bucket, plan_id), [Decimal(0), 0])
            total[0] += quantity
            total[1] += events
    rows = []
    for (lease_id, metric, name, bucket, plan_id), (quantity, events) in totals.items():
        _, pool_id, buyer_id, provider_id, _, _ = leases[lease_id]
        rows.append(
            UsageRollup(
                lease_id=lease_id,
                pool_id=pool_id,
                buyer_id=buyer_id,
                provider_id=provider_id,
                price_plan_id=plan_id,
                metric=metric,
                model=name,
                hour=bucket,
                quantity=quantity,
                events=events,
            )
        )
    usage_rollups_store(rows=rows)
    for start in range(0, len(marks), 500):
        done = Q()
        for lease_id, hour, batch in marks[start : start + 500]:
            done |= Q(lease_id=lease_id, hour=hour, batch=batch)
        UsageRollupDue.objects.filter(done).delete()
    return len(rows)


@transaction.atomic
def usage_rollups_store(*, rows: list[UsageRollup]) -> None:
    """Store these totals of (lease, metric, model, hour) per price version, each the row its
    month's invoice bills or, once that invoice is finalized, the late row of what was added
    since (see ``UsageRollup``). A version of such an hour that no longer has usage (a price
    version made after its usage was rolled up took it) keeps nothing."""
    if not rows:
        return
    closed = invoices_for_usage(months={(row.buyer_id, month_of(row.hour)) for row in rows})
    stored = {
        (lease_id, metric, model, hour, plan_id, late): (quantity, events)
        for lease_id, metric, model, hour, plan_id, late, quantity, events in UsageRollup.objects.filter(
            lease_id__in={row.lease_id for row in rows}, hour__in={row.hour for row in rows}
        ).values_list("lease_id", "metric", "model", "hour", "price_plan_id", "late", "quantity", "events")
    }
    UsageRollup.objects.bulk_create(
        _late_rows_of_closed_months([*rows, *_emptied(rows, stored)], closed, stored),
        update_conflicts=True,
        unique_fields=["lease", "metric", "model", "hour", "price_plan", "late"],
        update_fields=["quantity", "events", "updated_at"],
        batch_size=2000,
    )


def _emptied(rows: list[UsageRollup], stored: dict[tuple[Any, ...], Any]) -> list[UsageRollup]:
    """Zero rows for the stored versions of these rows' (lease, metric, model, hour) that they lack."""
    template = {(row.lease_id, row.metric, row.model, row.hour): row for row in rows}
    given = {(row.lease_id, row.metric, row.model, row.hour, row.price_plan_id) for row in rows}
    emptied = []
    for lease_id, metric, model, hour, plan_id in sorted({key[:5] for key in stored} - given, key=str):
        row = template.get((lease_id, metric, model, hour))
        if row is None:
            continue
        emptied.append(
            UsageRollup(
                lease_id=lease_id,
                pool_id=row.pool_id,
                buyer_id=row.buyer_id,
                provider_id=row.provider_id,
                price_plan_id=plan_id,
                metric=metric,
                model=model,
                hour=hour,
                quantity=Decimal(0),
                events=0,
            )
        )
    return emptied


def _late_rows_of_closed_months(
    rows: list[UsageRollup], closed: set[tuple[Any, datetime]], stored: dict[tuple[Any, ...], Any]
) -> list[UsageRollup]:
    """Rows of months whose invoice is finalized become late rows holding what the events add
    to the row that invoice billed; a bucket with nothing to add gets no late row. A row
    without a price was never billed: it is updated in place (a rebuild that prices its usage
    empties it, and the priced rows bill that usage as late usage)."""
    kept = []
    for row in rows:
        if (row.buyer_id, month_of(row.hour)[0]) not in closed or row.price_plan_id is None:
            kept.append(row)
            continue
        key = (row.lease_id, row.metric, row.model, row.hour, row.price_plan_id)
        billed_quantity, billed_events = stored.get((*key, False), (0, 0))
        row.late, row.quantity, row.events = True, row.quantity - billed_quantity, max(row.events - billed_events, 0)
        if row.quantity or (*key, True) in stored:
            kept.append(row)
    return kept


def usage_hours_reprice(plan: PricePlan) -> None:
    """Mark for a new rollup the hours of the pool's usage from the start of a new price
    version's hour: usage already rolled up there may now be the new version's (a version may
    start up to ``PRICE_CHANGE_SKEW`` before it is made; agents may stamp usage a little
    ahead). Runs inside the transaction that makes the version, its pool locked (a pools hook)."""
    buckets = sorted(
        set(
            UsageRollup.objects.filter(pool_id=plan.pool_id, hour__gte=_hour_floor(plan.effective_from)).values_list(
                "lease_id", "hour"
            )
        ),
        key=lambda bucket: (str(bucket[0]), bucket[1]),
    )
    if buckets:
        _mark_due(buckets, now=timezone.now())
        transaction.on_commit(lambda: queue_rollups(buckets), robust=True)


def usage_rollups_rebuild(*, progress: Any = None) -> int:
    """Rebuild every rollup from the raw events, lease by lease; drop rows no event backs."""
    lease_ids = list(UsageEvent.objects.values_list("lease_id", flat=True).distinct().order_by("lease_id"))
    written = 0
    for done, lease_id in enumerate(lease_ids, start=1):
        buckets = {
            (lease_id, hour)
            for hour in UsageEvent.objects.filter(lease_id=lease_id)
            .annotate(bucket=TruncHour("time", tzinfo=UTC))
            .values_list("bucket", flat=True)
            .distinct()
        }
        with transaction.atomic():
            UsageRollup.objects.filter(lease_id=lease_id).exclude(hour__in=[hour for _, hour in buckets]).delete()
            written += usage_rollup_buckets(buckets=buckets)
        if progress:
            progress(done, len(lease_ids))
    UsageRollup.objects.exclude(lease_id__in=lease_ids).delete()
    return written
