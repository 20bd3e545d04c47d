"""The error answers of docs/api.md, documented on every operation of the OpenAPI schema.

Every failure goes through ``core.exception_handler`` and has the same body, so the
statuses an operation can answer follow from what it is: any operation can be
rate-limited (429) or given bad parameters (400), a list or an object can be missing
(404, also an out-of-range page), an operation behind a key can be refused one (401,
403), an operation with a body can get one too large (413) or of another media type
(415), and a write can conflict with the state (409) or be refused by a rule (422); and
any can fail on our side (500 ``server_error``, with the request id to quote).

Each status says the stable codes every operation may answer with it; an operation
names its own codes with the ``x-error-codes`` extension (``{status: {code: meaning}}``).
"""

from decimal import Decimal
from typing import Any

from django import forms
from drf_spectacular import openapi
from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from core.idempotency import HEADER, HONOURS_HEADER, MAX_KEY_LENGTH

ERROR_COMPONENT = "Error"

IDEMPOTENCY_KEY = OpenApiParameter(
    HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    OpenApiParameter.HEADER,
    required=False,
    description=(
        f"1 to {MAX_KEY_LENGTH} printable characters, unique per request (a UUID). Sent again with the same "
        "body, the first successful answer is replayed (header `Idempotent-Replayed: true`) and nothing is done "
        "twice; with another body or path it is a 409 `idempotency_key_reused`. Kept IDEMPOTENCY_KEY_TTL_HOURS "
        "(24 by default)."
    ),
)


def _bounds(minimum: Any, maximum: Any) -> str:
    if minimum is not None and maximum is not None:
        return f"From {minimum} to {maximum}."
    if minimum is not None:
        return f"At least {minimum}."
    return f"At most {maximum}." if maximum is not None else ""


def _bound_decimal(schema: dict[str, Any], field: serializers.DecimalField) -> None:
    """A decimal string's limits: the server's minimum and maximum in the description, and in the
    pattern what a pattern can say: at least one digit, no minus sign where negatives are refused,
    not zero where the minimum is the smallest step above it."""
    pattern = schema.get("pattern", "")
    pattern = pattern.replace("\\d{0,", "\\d{1,", 1)
    minimum, maximum = field.min_value, field.max_value
    if minimum is not None and Decimal(minimum) >= 0:
        pattern = pattern.replace("^-?", "^", 1)
        step = Decimal(1).scaleb(-(field.decimal_places or 0))
        if 0 < Decimal(minimum) <= step:
            pattern = "^(?=.*[1-9])" + pattern[1:]
    if pattern:
        schema["pattern"] = pattern
    said = _bounds(minimum, maximum)
    if said:
        schema["description"] = f"{schema.get('description', '')} {said}".strip()


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, saying what the server does: ``Idempotency-Key`` on the operations whose
    handler honours it (``core.idempotency``), and the limits of decimal strings."""

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        handler = getattr(self.view, self.method.lower(), None)
        if getattr(handler, HONOURS_HEADER, False):
            parameters.append(IDEMPOTENCY_KEY)
        return parameters

    def _map_serializer(self, serializer: Any, direction: str, bypass_extensions: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_serializer(serializer, direction, bypass_extensions)
        rules = getattr(serializer, "rules", None)
        if rules and direction == "request":
            said = "; ".join(f"`{code}`: {rule}" for code, rule in rules.items())
            schema["description"] = (
                f"{schema.get('description', '')}\n\nRules across fields (a 400 with the code): {said}.".strip()
            )
        return schema

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and schema.get("format") == "decimal":
            _bound_decimal(schema, field)
        return schema


class StrictFilterExtension(DjangoFilterExtension):
    """The query parameters of lists as their form fields read them: whole numbers as integers,
    with the filter's minimum and maximum."""

    target_class = "core.filters.StrictFilterBackend"
    priority = 1

    def resolve_filter_field(
        self, auto_schema: Any, model: Any, filterset_class: Any, field_name: str, filter_field: Any
    ) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().resolve_filter_field(
            auto_schema, model, filterset_class, field_name, filter_field
        )
        form_field = filter_field.field
        for parameter in parameters:
            schema = parameter["schema"]
            if isinstance(form_field, forms.IntegerField) and not isinstance(
                form_field, forms.FloatField | forms.DecimalField
            ):
                schema["type"] = "integer"
            for bound, keyword in (("min_value", "minimum"), ("max_value", "maximum")):
                value = filter_field.extra.get(bound)
                if value is not None and schema.get("type") in ("integer", "number"):
                    schema[keyword] = value
        return parameters


_DESCRIPTIONS = {
    "400": (
        "Bad input: the body, a parameter or a header is invalid; `fields` says which and why. Codes: "
        "`validation_error` (each field's problems in `fields`, each with its own code: `invalid_choice` "
        'names the valid values, e.g. "workload must be one of: realtime_inference, batch_inference, '
        'training"), `unknown_field`, `malformed_json`, `json_too_deep` (more than 32 levels), `invalid_text` (a NUL '
        "character, a lone surrogate or bytes that are not UTF-8)."
    ),
    "401": "No API key, or an unknown or revoked one.",
    "403": "This kind of organization, or this key's role, may not do this.",
    "404": (
        "No such resource for this caller (another organization's answers 404 too), or no such page "
        "(`not_found`; also for a path under /api/ that does not exist)."
    ),
    "405": "This method is not allowed here.",
    "409": (
        "A conflict with the current state, or an Idempotency-Key reused for another request "
        "(`idempotency_key_reused`)."
    ),
    "413": "The request body is too large; the message states the limit.",
    "415": "The request body's media type is not accepted.",
    "422": "A valid request that a business rule refuses (no capacity, an ineligible voucher...).",
    "429": "Rate limit exceeded; the message states the limit and `Retry-After` when to retry.",
    "503": "A service this one depends on (Stripe) could not be reached; nothing was done twice. Retry later.",
    "500": (
        "A failure on our side (`server_error`); it was logged with `request_id` (also the `X-Request-ID` "
        "header): quote it when reporting it. Retry later."
    ),
}

_FIELD_ERROR = {
    "type": "object",
    "description": "One problem with a field.",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "Stable, snake_case, e.g. `required`, `invalid_choice`."},
        "message": {"type": "string"},
    },
}

_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "FieldError": _FIELD_ERROR,
    ERROR_COMPONENT: {
        "type": "object",
        "description": "The one error body of the API.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "fields"],
                "additionalProperties": True,
                "properties": {
                    "code": {
                        "type": "string",
                        "description": (
                            "Stable, snake_case: what went wrong. Each response's description names the codes "
                            "it may carry (e.g. `validation_error`, `not_found`, `server_error`)."
                        ),
                    },
                    "message": {"type": "string", "description": "What went wrong and what to do, for people."},
                    "fields": {
                        "type": "object",
                        "description": (
                            "By field name: its problems (a list of `FieldError`); for a nested object or a list of "
                            "objects, by key or index: that object's fields, the same way."
                        ),
                        "additionalProperties": {
                            "oneOf": [
                                {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                                {
                                    "type": "object",
                                    "additionalProperties": True,
                                    "description": "A nested object's or a list item's fields, the same way.",
                                },
                            ]
                        },
                    },
                    "reasons": {
                        "type": "array",
                        "description": (
                            "With 422 `no_capacity` (and `pool_rejected`): how many pools were turned down "
                            "for each reason, most common first."
                        ),
                        "items": {
                            "type": "object",
                            "required": ["reason", "message", "pools"],
                            "properties": {
                                "reason": {"type": "string", "description": "e.g. `free_cards`, `latency`."},
                                "message": {"type": "string"},
                                "pools": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                    "request_id": {
                        "type": "string",
                        "description": "On a 500: the request's id in our logs (the X-Request-ID header).",
                    },
                },
            }
        },
    },
}

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds until a request will be accepted again.", "schema": {"type": "integer"}}
}


def _statuses(method: str, operation: dict[str, Any]) -> list[str]:
    statuses = ["400", "404", "405", "429", "500"]
    if any(requirement for requirement in operation.get("security", [])):
        statuses += ["401", "403"]
    if method in ("post", "put", "patch", "delete"):
        statuses += ["409", "413", "415", "422"]
    if operation.get("x-calls-stripe"):
        statuses.append("503")
    return statuses


def _tighten(schemas: dict[str, Any]) -> None:
    """Say what the server does: request bodies refuse unknown fields (StrictSerializer)."""
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema.setdefault("additionalProperties", False)


def _nullable_references(node: Any) -> None:
    """drf-spectacular says a nullable reference as ``{"allOf": [ref], "nullable": true}``, which an
    OpenAPI 3.0 validator reads as "never null" (``nullable`` needs a ``type`` beside it); say
    "the reference or null" instead."""
    if isinstance(node, dict):
        all_of = node.get("allOf")
        if node.get("nullable") is True and "type" not in node and isinstance(all_of, list) and len(all_of) == 1:
            del node["nullable"], node["allOf"]
            node["oneOf"] = [*all_of, {"enum": [None]}]
        for value in node.values():
            _nullable_references(value)
    elif isinstance(node, list):
        for value in node:
            _nullable_references(value)


def _own_codes(codes: dict[str, str]) -> str:
    if not codes:
        return ""
    return " Codes of this operation: " + "; ".join(f"`{code}`: {meaning}" for code, meaning in codes.items()) + "."


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the error answers to every operation.

    Three extensions a view may put on an operation (removed here): ``x-calls-stripe`` (it
    documents a 503), ``x-body-required`` (a body given as a plain schema is required) and
    ``x-error-codes`` (the operation's own codes by status, added to those statuses' descriptions).
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    _tighten(schemas)
    _nullable_references(result)
    schemas.update(_ERROR_SCHEMAS)
    reference = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            statuses = _statuses(method, operation)
            codes: dict[str, dict[str, str]] = operation.pop("x-error-codes", {})
            operation.pop("x-calls-stripe", None)
            if operation.pop("x-body-required", False):  # drf-spectacular says so only for serializers
                operation["requestBody"]["required"] = True
            for status in statuses:
                if status in responses:
                    continue
                response: dict[str, Any] = {
                    "description": _DESCRIPTIONS[status] + _own_codes(codes.get(status, {})),
                    "content": {"application/json": {"schema": reference}},
                }
                if status == "429":
                    response["headers"] = _RETRY_AFTER
                responses[status] = response
    return result
