"""Schema fuzzing: schemathesis against the served OpenAPI schema, every default check,
every operation, with a key of each kind of organization, on a world whose ids resolve.

Each generated request is sent once with each kind's key. Path ids that the fuzzer
draws as valid UUIDs are swapped, one time in two, for the id of a real object of
tenant A, so that requests reach the code behind the lookups (the owner's key finds
the object; the others get 404 or 403). The figures (operations, requests, failures)
are printed at the end of the session and written to var/fuzz-figures.json.

One deliberate setting, `positive_data_acceptance` also accepting 400 and 422: the
schema cannot say everything a request must satisfy (a GPU model code that exists, an
end after a start, at most 31 days of hourly usage, a Stripe signature that verifies);
docs/api.md answers those with 400 (bad input, `fields` saying why) or 422 (a rule). Every
other check runs with its defaults.

`FUZZ_EXAMPLES` (default 20) bounds the examples per operation of the fuzzing phase.
"""

import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection

from config.wsgi import application
from tests.reliability.conftest import write_figures
from tests.reliability.world import KINDS, World

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))

requests_by_operation: Counter[str] = Counter()
allowed_kinds: defaultdict[str, set[str]] = defaultdict(set)  # kinds that got anything but a 403
refused_kinds: defaultdict[str, set[str]] = defaultdict(set)
responses_by_status: Counter[int] = Counter()


def _counting_app(environ: dict[str, Any], start_response: Any) -> Any:
    def start(status: str, headers: Any, *args: Any) -> Any:
        responses_by_status[int(status.split()[0])] += 1
        return start_response(status, headers, *args)

    return application(environ, start)


CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "400", "422", "429"]},
            # The defaults, and 413: too many items (events, vouchers) is a 413 that says the limit.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                ]
            },
        }
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/", _counting_app, config=CONFIG)
load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # the CLI's `--checks all`
# Checks an operation cannot pass by design, each with its reason in docs/reliability.md.
DOCUMENTED_STRICTNESS = {
    # A bad event (or a ce-* header binary mode does not use) is that event's rejection in a 200
    # answer, never the batch's: one bad event must not cost the good ones beside it.
    "POST /api/v1/usage-events/": [negative_data_rejection],
}


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    started = time.monotonic()
    yield
    write_figures(
        "fuzz-figures.json",
        {
            "operations": len(requests_by_operation),
            "generated_requests": sum(requests_by_operation.values()),
            "requests_served": sum(responses_by_status.values()),
            "responses_by_status": dict(sorted(responses_by_status.items())),
            "examples_per_operation": EXAMPLES,
            "seconds": round(time.monotonic() - started, 1),
        },
    )


def _real_ids(world: World) -> dict[str, str]:
    ids = {name: str(obj.pk) for name, obj in world.a.objects().items()}
    ids["key_id"] = str(world.a.spare_keys["buyer"].pk)
    return ids


def _resolve_path_ids(case: Any, ids: dict[str, str]) -> None:
    for name, value in (case.path_parameters or {}).items():
        try:
            drawn = uuid.UUID(str(value))
        except ValueError:
            continue  # not a UUID: a negative case, sent as drawn
        if name in ids and drawn.int % 2 == 0:
            case.path_parameters[name] = ids[name]


def _negates_authorization(case: Any) -> bool:
    """Whether the case's negation is (partly) a missing or broken ``Authorization`` header.

    Every request here is sent with a key, which undoes that part on the wire: the request sent
    is not the invalid one the case describes, so it is not judged as one (an extra query
    property that serialization drops could otherwise leave a valid request "accepted")."""
    data = case.meta.phase.data if case.meta is not None else None
    if data is None:
        return False
    named = {getattr(data, "parameter", None)}
    for mutation in getattr(data, "mutations", ()):
        if mutation.parameter_location == ParameterLocation.HEADER:
            was = mutation.original_value
            named |= {mutation.parameter, *(was if isinstance(was, list) else [was])}
    return "Authorization" in named


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_holds_its_schema_for_every_kind_of_key(case: Any, world: World) -> None:
    _resolve_path_ids(case, _real_ids(world))
    label = case.operation.label
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    excluded = list(DOCUMENTED_STRICTNESS.get(label, []))
    if negative and _negates_authorization(case):
        excluded.append(negative_data_rejection)
    for kind in KINDS:
        # Invalid data is sent with the keys that may use the operation (its validation runs after
        # the kind is checked); valid data with every key.
        if negative and refused_kinds[label] and kind in refused_kinds[label]:
            continue
        requests_by_operation[label] += 1
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {world.key(kind)}"},
            checks=ALL_CHECKS,
            excluded_checks=excluded,
        )
        if response.status_code != 403:
            allowed_kinds[label].add(kind)
        refused_kinds[label] = set(KINDS) - allowed_kinds[label]
