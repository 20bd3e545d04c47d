"""Hostile input: what a fuzzer of the schema's types does not send.

NUL characters, lone surrogates, decimals with extreme exponents, date-times at the edges
of the calendar (years 1 and 9999, offsets of 16 hours) and JSON nested deep, sent to
every operation of the served OpenAPI schema that takes a JSON body (in its properties,
its keys, or as the whole body) and to every query parameter of every operation. The
operations come from the schema, not from a list here: a new route is attacked when it
is added. Each request is sent with a key of a kind the operation serves, on the
reliability world (tests/reliability/world.py), path ids naming tenant A's objects.

Never a 5xx; and a 4xx changed nothing in the database: PostgreSQL's own count of the rows
the transaction wrote stays the same, or, where the refusal wrote (and perhaps undid)
something, every table's rows after it equal those at a savepoint taken before it (an API
key's ``last_used_at`` aside). Hypothesis draws the values
(``HOSTILE_EXAMPLES`` per case, default 12; derandomized, so CI sends the same).
The named shapes of issue 16 are tests of their own beside the code they reach (tests/core,
tests/billing). The figures are written to var/hostile-figures.json.
"""

import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection, transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import write_figures
from tests.reliability.world import KINDS, World

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "12"))
JSON_TYPES = re.compile(r"^application/(.+\+)?json$")


def _schema() -> dict[str, Any]:
    """The OpenAPI schema /api/schema/ serves, as plain JSON."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


SCHEMA = _schema()


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = SCHEMA["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in SCHEMA["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, operation))
    return found


OPERATIONS = _operations()


def _json_media(operation: dict[str, Any]) -> str | None:
    return next((m for m in (operation.get("requestBody") or {}).get("content", {}) if JSON_TYPES.match(m)), None)


def _properties(operation: dict[str, Any]) -> dict[str, Any]:
    media = _json_media(operation)
    schema = _resolve(operation["requestBody"]["content"][media].get("schema") or {}) if media else {}
    return {name: _resolve(node) for name, node in (schema.get("properties") or {}).items()}


# Each JSON body, whole; each property of each body; each query parameter of each operation.
BODIES = [(method, path, op) for method, path, op in OPERATIONS if _json_media(op)]
PROPERTIES = [(method, path, op, name) for method, path, op in BODIES for name in sorted(_properties(op))]
PARAMETERS = [
    (method, path, parameter["name"], parameter.get("schema") or {})
    for method, path, op in OPERATIONS
    for parameter in op.get("parameters", [])
    if parameter.get("in") == "query"
]


# --- the hostile values ------------------------------------------------------------------

DEEP = "\u2063deep:"  # a placeholder the encoder swaps for raw nested JSON

hostile_text = st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "\udfff", "x\ud800y", "\ud800\x00", "\ufffe", "\U0010ffff", "%00", "\\u0000"]
) | st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=4)
extreme_numbers = st.sampled_from(
    ["1e-999999", "1e999999", "-1e999999", "1E-2147483648", "9" * 5000, "0." + "0" * 5000 + "1", "NaN", "-Infinity",
     "1e-10001", "123456789012345678901234567890.5", "-0"]
)  # fmt: skip
extreme_dates = st.sampled_from(
    ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
     "2026-03-01T00:00:00+16:00", "2026-03-01T00:00:00-16:00", "2026-03-01T00:00:00+23:59", "0001-01-01",
     "9999-12-31", "1969-12-31T23:59:59Z", "9000-01-01T00:00:00Z", "+275760-09-13T00:00:00Z"]
)  # fmt: skip
depths = st.sampled_from([33, 100, 1000, 5000])
deep_values = depths.map(lambda depth: f"{DEEP}{depth}")
raw_numbers = st.sampled_from([1e308, -1e308, 2**64, -(2**63) - 1, 10**30, 5e-324])
hostile_scalars = hostile_text | extreme_numbers | extreme_dates | raw_numbers
hostile_values = hostile_scalars | deep_values | st.dictionaries(hostile_text, hostile_scalars, min_size=1, max_size=2)


def _encode(value: Any) -> bytes:
    """JSON as a client could send it: lone surrogates and NUL as escapes, deep values as raw nesting."""
    text = json.dumps(value, ensure_ascii=True)
    return re.sub(
        r'"\\u2063deep:(\d+)"', lambda match: "[" * int(match.group(1)) + "]" * int(match.group(1)), text
    ).encode()


def _values_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Hostile values, those of the schema's type first (a date-time parameter gets the calendar's edges)."""
    if schema.get("format") == "date-time" or schema.get("format") == "date":
        return extreme_dates | hostile_text
    if schema.get("type") in ("number", "integer") or "pattern" in schema:  # decimals are patterned strings
        return extreme_numbers | raw_numbers | hostile_text
    if schema.get("type") == "object":
        return st.dictionaries(hostile_text, hostile_scalars, min_size=1, max_size=2) | deep_values
    return hostile_text | extreme_numbers | extreme_dates | deep_values


def _plausible(schema: dict[str, Any]) -> Any:
    """A value of the schema's type, so that a body gets past its other fields to the one attacked."""
    if "enum" in schema:
        return schema["enum"][0]
    kind, shape = schema.get("type"), schema.get("format")
    if shape == "date-time":
        return "2026-03-18T08:00:00Z"
    if shape == "uuid":
        return str(uuid.uuid4())
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "1.00" if "pattern" in schema else "hostile"


def _query(values: dict[str, str]) -> str:
    return "&".join(
        f"{name}={quote(str(value).encode('utf-8', 'surrogatepass'), safe='')}" for name, value in values.items()
    )


# --- sending, and seeing that nothing changed ------------------------------------------------


def _snapshot() -> dict[str, str]:
    """A digest of every table's rows (an API key's last_used_at aside: authenticating sets it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " ORDER BY c.relname"
        )
        tables = [name for (name,) in cursor.fetchall()]
        row = "(to_jsonb(t) - 'last_used_at')::text"
        digest = f"(SELECT md5(coalesce(string_agg({row}, ',' ORDER BY {row}), '')) FROM %s t)"  # noqa: S608
        # the tables' names come from the catalog, quoted
        cursor.execute("SELECT " + ", ".join(digest % connection.ops.quote_name(t) for t in tables))
        return dict(zip(tables, cursor.fetchone(), strict=True))


def _path(path: str, world: World) -> str:
    ids = {name: str(obj.pk) for name, obj in world.a.objects().items()}
    ids["key_id"] = str(world.a.spare_keys["buyer"].pk)
    return re.sub(r"\{(\w+)\}", lambda match: ids.get(match.group(1), str(uuid.uuid4())), path)


_kind_for: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def _stripe_customers(world: World, django_db_blocker: Any) -> None:
    """Each buyer's Stripe customer, made now: paying makes it on first use and records it (a mirror
    of what Stripe holds), also when Stripe then refuses the card. Not a change a refusal must undo."""
    from billing.services.payments import stripe_customer_for

    with django_db_blocker.unblock():
        for tenant in (world.a, world.b):
            stripe_customer_for(tenant.buyer)


def _client(method: str, path: str, world: World) -> Client:
    """A client with the key of the first kind the operation does not refuse (403)."""
    key = (method, path)
    if key not in _kind_for:
        _kind_for[key] = KINDS[0]
        for kind in KINDS:
            probe = Client(HTTP_AUTHORIZATION=f"Bearer {world.key(kind)}")
            if probe.generic(method, _path(path, world), b"{}", content_type="application/json").status_code != 403:
                _kind_for[key] = kind
                break
    return Client(HTTP_AUTHORIZATION=f"Bearer {world.key(_kind_for[key])}")


responses_by_status: Counter[int] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    started = time.monotonic()
    yield
    write_figures(
        "hostile-figures.json",
        {
            "bodies": len(BODIES),
            "fields": len(PROPERTIES),
            "query_parameters": len(PARAMETERS),
            "requests": sum(responses_by_status.values()),
            "responses_by_status": dict(sorted(responses_by_status.items())),
            "examples_per_case": EXAMPLES,
            "seconds": round(time.monotonic() - started, 1),
        },
    )


def _rows_written() -> int:
    """Rows inserted, updated or deleted so far in this test's transaction, in every table."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables")
        return int(cursor.fetchone()[0])


def _send_and_check(client: Client, method: str, url: str, body: bytes, content_type: str) -> None:
    written = _rows_written()
    before = transaction.savepoint()
    response = client.generic(method, url, body, content_type=content_type)
    responses_by_status[response.status_code] += 1
    assert response.status_code < 500, (method, url, body[:300], response.content[:500])
    if 400 <= response.status_code < 500 and _rows_written() != written:
        # The refusal wrote something (perhaps undone since): every table's rows after it,
        # compared with the same rows back at the savepoint taken before it.
        after = _snapshot()
        transaction.savepoint_rollback(before)
        changed = [table for table, digest in _snapshot().items() if after[table] != digest]
        assert changed == [], (method, url, body[:300], response.status_code, changed)
    else:
        transaction.savepoint_commit(before)


HYPOTHESIS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)


@pytest.mark.parametrize(("method", "path", "operation"), BODIES, ids=[f"{m} {p}" for m, p, _ in BODIES])
def test_a_hostile_json_body_never_gets_a_5xx_and_a_refusal_changes_nothing(
    world: World, method: str, path: str, operation: dict[str, Any]
) -> None:
    # the whole body deep, keys with NUL or surrogates, a list where an object goes
    client, media = _client(method, path, world), _json_media(operation)
    bodies = (
        deep_values | st.dictionaries(hostile_text, hostile_scalars, min_size=1, max_size=2) | st.lists(hostile_values)
    )

    @HYPOTHESIS
    @given(body=bodies)
    def attack(body: Any) -> None:
        _send_and_check(client, method, _path(path, world), _encode(body), media or "application/json")

    attack()


@pytest.mark.parametrize(
    ("method", "path", "operation", "name"), PROPERTIES, ids=[f"{m} {p} {n}" for m, p, _, n in PROPERTIES]
)
def test_a_hostile_value_in_any_field_of_any_body_never_gets_a_5xx_and_a_refusal_changes_nothing(
    world: World, method: str, path: str, operation: dict[str, Any], name: str
) -> None:
    properties = _properties(operation)
    client, media = _client(method, path, world), _json_media(operation)
    base = {other: _plausible(schema) for other, schema in properties.items()}

    @HYPOTHESIS
    @given(value=_values_for(properties[name]), complete=st.booleans())
    def attack(value: Any, complete: bool) -> None:
        body = {**(base if complete else {}), name: value}
        _send_and_check(client, method, _path(path, world), _encode(body), media or "application/json")

    attack()


@pytest.mark.parametrize(
    ("method", "path", "name", "schema"), PARAMETERS, ids=[f"{m} {p} {n}" for m, p, n, _ in PARAMETERS]
)
def test_a_hostile_query_parameter_never_gets_a_5xx_and_a_refusal_changes_nothing(
    world: World, method: str, path: str, name: str, schema: dict[str, Any]
) -> None:
    client = _client(method, path, world)

    @HYPOTHESIS
    @given(value=_values_for(schema))
    def attack(value: Any) -> None:
        _send_and_check(client, method, f"{_path(path, world)}?{_query({name: value})}", b"", "application/json")

    attack()


def test_every_json_route_and_every_filter_is_attacked() -> None:
    # the operations come from the schema: the lists are not empty by accident
    assert len(BODIES) >= 15 and len(PROPERTIES) >= 40
    assert {("/api/v1/offers/", "max_price"), ("/api/v1/usage/", "to")} <= {(p, n) for _, p, n, _ in PARAMETERS}
    assert ("/api/v1/pools/", "token_prices") in {(p, n) for _, p, _, n in PROPERTIES}
    assert "/api/v1/usage-events/" in {path for _, path, _ in BODIES}
