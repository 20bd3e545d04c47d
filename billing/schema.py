"""The OpenAPI description of a usage report: CloudEvents 1.0, typed per event type.

``billing.cloudevents`` checks each event by hand (one bad event must never sink its batch), so
no serializer describes the body; this extension does, from the same limits, as components a
client generator turns into classes: ``GpuSecondsEvent`` and ``TokensEvent`` (told apart by
``type``), their ``data`` (``GpuSecondsData``, ``TokensData``), and ``UsageEvent`` (either).

The body is one event, a list of events, or in binary mode (the attributes as ``ce-*`` headers,
``BINARY_HEADERS``) the ``data`` alone. It is described under ``application/json`` only, the media
type that carries all three; ``application/cloudevents+json`` (one event) and
``application/cloudevents-batch+json`` (a list) take the same events, as the operation says.
One media type keeps generated clients working: openapi-python-client 0.29 writes
``isinstance(body, list[...])`` for a list body beside another media type, which cannot run.
"""

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter

from billing.cloudevents import GPU_SECONDS, MAX_EVENTS, MAX_TOKENS_PER_EVENT, TOKENS, TYPES

# The limits billing.cloudevents.parse_event checks, attribute by attribute.
_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "specversion": {"type": "string", "enum": ["1.0"], "description": "CloudEvents version: `1.0`."},
    "id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "description": "With `source`, identifies the event forever: sent again it is a duplicate.",
    },
    "source": {
        "type": "string",
        "minLength": 1,
        "maxLength": 500,
        "description": "The agent that measured it, e.g. `agent://west-cloud/pool-7`.",
    },
    "subject": {"type": "string", "format": "uuid", "description": "The lease's id."},
    "time": {
        "type": "string",
        "format": "date-time",
        "description": "When the usage happened (RFC 3339 with an offset), within the lease and not in the future.",
    },
}

_DATA: dict[str, dict[str, Any]] = {
    "GpuSecondsData": {
        "type": "object",
        "description": f"The `data` of a `{GPU_SECONDS}` event.",
        "required": ["quantity"],
        "properties": {
            "quantity": {"type": "number", "minimum": 0, "description": "Card-seconds used (cards × seconds)."},
            "cards": {"type": "integer", "minimum": 1, "description": "Cards in use, if the agent knows."},
        },
    },
    "TokensData": {
        "type": "object",
        "description": f"The `data` of a `{TOKENS}` event.",
        "required": ["model", "input_tokens", "output_tokens"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "maxLength": 100, "description": "The model served."},
            "input_tokens": {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS_PER_EVENT},
            "output_tokens": {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS_PER_EVENT},
        },
    },
}

_EVENTS = {"GpuSecondsEvent": (GPU_SECONDS, "GpuSecondsData"), "TokensEvent": (TOKENS, "TokensData")}

BINARY_HEADERS = [
    OpenApiParameter(
        f"ce-{name}",
        # A header is a plain string to generators: no formats.
        {key: value for key, value in schema.items() if key not in ("description", "format")},
        OpenApiParameter.HEADER,
        required=False,
        description=f"Binary mode: the event's `{name}` (then the body is its `data`). {schema['description']}",
    )
    for name, schema in {
        **_ATTRIBUTES,
        "type": {"type": "string", "enum": list(TYPES), "description": "The event type."},
    }.items()
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _components() -> dict[str, dict[str, Any]]:
    components: dict[str, dict[str, Any]] = dict(_DATA)
    for name, (event_type, data) in _EVENTS.items():
        components[name] = {
            "type": "object",
            "description": f"A CloudEvent 1.0 of type `{event_type}`; other (extension) attributes are ignored.",
            "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
            "properties": {
                **_ATTRIBUTES,
                "type": {"type": "string", "enum": [event_type]},
                "data": _ref(data),
            },
        }
    components["UsageEvent"] = {
        "oneOf": [_ref(name) for name in _EVENTS],
        "discriminator": {"propertyName": "type", "mapping": {t: _ref(n)["$ref"] for n, (t, _) in _EVENTS.items()}},
    }
    return components


class UsageEventsBodyExtension(OpenApiSerializerExtension):
    target_class = "billing.serializers.UsageEventsBodySerializer"

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        for name, schema in _components().items():
            auto_schema.registry.register_on_missing(
                ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name)
            )
        return {
            "oneOf": [
                _ref("UsageEvent"),
                {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": _ref("UsageEvent")},
                *(_ref(name) for name in _DATA),
            ],
            "description": (
                f"One event, a list of up to {MAX_EVENTS:,} events, or in binary mode (`ce-*` headers) one event's "
                "`data`."
            ),
        }
