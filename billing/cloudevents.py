"""CloudEvents 1.0 usage events: reading a request, checking one event.

A request carries one event in structured mode (``application/cloudevents+json``)
or binary mode (``ce-*`` headers, the data as the body), a batch
(``application/cloudevents-batch+json``) or a plain JSON array (or one event). Each event is
checked on its own, so that one bad event never sinks the rest of its batch.
Plain dicts and tuples only: this is the hot path of ingestion.
"""

import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from django.utils.translation import gettext

from core.exceptions import ApplicationError, PayloadTooLarge
from core.parsers import NUL_MESSAGE, has_nul, parse_json
from core.timezones import datetime_problem

MAX_EVENTS = 10_000
MAX_BYTES = 10 * 1024 * 1024
MAX_TOKENS_PER_EVENT = 10**10

GPU_SECONDS = "compute.gpu_seconds"
TOKENS = "compute.tokens"
TYPES = (GPU_SECONDS, TOKENS)

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY_ATTRIBUTES = ("id", "source", "specversion", "type", "subject", "time", "datacontenttype")


def too_large_message() -> str:
    return gettext("Send at most %(events)s events and %(megabytes)s MB in one request; split the batch.") % {
        "events": f"{MAX_EVENTS:,}",
        "megabytes": MAX_BYTES // (1024 * 1024),
    }


def events_from_request(content_type: str, headers: Mapping[str, str], body: bytes) -> list[Any]:
    """The events of a request, unchecked. A request that is not CloudEvents at all is a 4xx."""
    if len(body) > MAX_BYTES:
        raise PayloadTooLarge(too_large_message(), code="payload_too_large")
    media_type = content_type.split(";")[0].strip().lower()
    payload = parse_json(body) if body else None  # a body too deep or not Unicode is a 400 for all its events

    if "ce-specversion" in headers:
        event: dict[str, Any] = {name: headers[f"ce-{name}"] for name in BINARY_ATTRIBUTES if f"ce-{name}" in headers}
        event["data"] = payload
        events: list[Any] = [event]
    elif media_type == STRUCTURED:
        if not isinstance(payload, dict):
            raise ApplicationError(gettext("A structured CloudEvent is a JSON object."), code="invalid_request")
        events = [payload]
    elif media_type in (BATCH, "application/json"):
        if media_type == "application/json" and isinstance(payload, dict):
            payload = [payload]  # one event, as in structured mode
        if not isinstance(payload, list):
            raise ApplicationError(
                gettext("Send a JSON array of CloudEvents (or one event as %(STRUCTURED)s).")
                % {"STRUCTURED": STRUCTURED},
                code="invalid_request",
            )
        events = payload
    else:
        raise ApplicationError(
            gettext("Content-Type %(value)s: use %(STRUCTURED)s, %(BATCH)s or application/json.")
            % {"value": media_type or "missing", "STRUCTURED": STRUCTURED, "BATCH": BATCH},
            code="unsupported_media_type",
            status_code=415,
        )
    if len(events) > MAX_EVENTS:
        raise PayloadTooLarge(too_large_message(), code="too_many_events")
    if not events:
        raise ApplicationError(gettext("The batch is empty."), code="empty_batch")
    return events


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3 times as much, per event
class Event:
    index: int
    source: str
    id: str
    type: str
    lease_id: uuid.UUID
    subject: str  # the lease id's canonical text
    time: datetime
    time_text: str  # ISO 8601 in UTC, what the COPY sends: psycopg takes 4 times as long to format a datetime
    hour: int  # hours since the epoch: the (lease, hour) bucket without datetime arithmetic
    quantity: Decimal | None
    cards: int | None
    model: str
    input_tokens: int | None
    output_tokens: int | None
    data: dict[str, Any]
    digest: str  # 32 hex digits of the content's SHA-256


class Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _text(event: Mapping[str, Any], name: str, limit: int) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Rejected("missing_attribute", f"'{name}' must be a string of 1 to {limit} characters.")
    return value


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_PER_EVENT:
        raise Rejected("invalid_tokens", f"data.{name} must be an integer from 0 to {MAX_TOKENS_PER_EVENT:,}.")
    return value


# An agent's batch names a few leases and a few instants many times over: each distinct subject
# and time is parsed and checked once per process (what raises is not remembered).
@lru_cache(maxsize=8_192)
def _lease(subject: str) -> tuple[uuid.UUID, str]:
    """The lease id of a ``subject``, and its canonical text (what the content digest holds)."""
    try:
        lease_id = uuid.UUID(subject)
    except ValueError:
        raise Rejected("invalid_subject", "'subject' must be the id of a lease.") from None
    return lease_id, str(lease_id)


@lru_cache(maxsize=8_192)
def _time(raw: str) -> tuple[datetime, str, int]:
    """An event's ``time``, in ISO 8601, and its hour since the epoch (its rollup bucket)."""
    try:
        time = datetime.fromisoformat(raw)
    except ValueError:
        raise Rejected("invalid_time", "'time' must be an RFC 3339 timestamp.") from None
    if time.tzinfo is None:
        raise Rejected("invalid_time", "'time' needs a UTC offset, e.g. 2026-03-01T08:00:00Z.")
    if problem := datetime_problem(time):
        raise Rejected("invalid_time", f"'time': {problem}")
    return time, time.astimezone(UTC).isoformat(), int(time.timestamp()) // 3600


def parse_event(index: int, event: Any) -> Event:
    """One event, checked for shape and values; raises ``Rejected`` with a code."""
    if not isinstance(event, dict):
        raise Rejected("invalid_event", "An event is a JSON object.")
    if event.get("specversion") != "1.0":
        raise Rejected("unsupported_specversion", "Only CloudEvents specversion '1.0' is accepted.")
    event_id, source = _text(event, "id", 200), _text(event, "source", 500)
    if "\x00" in event_id or "\x00" in source:
        raise Rejected("invalid_text", NUL_MESSAGE)
    event_type = event.get("type")
    if event_type not in TYPES:
        raise Rejected("unknown_type", f"'type' must be one of {', '.join(TYPES)}.")
    lease_id, subject = _lease(_text(event, "subject", 64))
    raw_time = _text(event, "time", 64)
    time, time_text, hour = _time(raw_time)
    data = event.get("data")
    if not isinstance(data, dict):
        raise Rejected("invalid_data", "'data' must be a JSON object.")

    quantity = cards = input_tokens = output_tokens = None
    model = ""
    if event_type == GPU_SECONDS:
        value = data.get("quantity")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise Rejected("invalid_quantity", "data.quantity must be a finite, non-negative number of card-seconds.")
        quantity = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if "cards" in data:
            cards = data["cards"]
            if isinstance(cards, bool) or not isinstance(cards, int) or cards < 1:
                raise Rejected("invalid_cards", "data.cards must be a positive integer.")
    else:
        model = data.get("model")  # type: ignore[assignment]
        if not isinstance(model, str) or not 0 < len(model) <= 100:
            raise Rejected("invalid_tokens", "data.model must name the model, 1 to 100 characters.")
        input_tokens, output_tokens = _count(data, "input_tokens"), _count(data, "output_tokens")

    content = orjson.dumps([event_type, subject, raw_time, data], option=orjson.OPT_SORT_KEYS)
    # A NUL anywhere in data (the model, a key) is written \u0000 here: only then is data walked.
    if b"\\u0000" in content and has_nul(data):
        raise Rejected("invalid_text", NUL_MESSAGE)
    digest = hashlib.sha256(content).hexdigest()[:32]  # 16 bytes: the events table's ``digest`` uuid
    return Event(
        index, source, event_id, event_type, lease_id, subject, time, time_text, hour, quantity, cards, model,
        input_tokens, output_tokens, data, digest,
    )  # fmt: skip
