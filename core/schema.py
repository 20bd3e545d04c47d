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

from typing import Any

ERROR_COMPONENT = "Error"

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

_ERROR_SCHEMA = {
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
                    "additionalProperties": True,
                    "description": "Per field (or row index): a list of {code, message}.",
                },
                "request_id": {
                    "type": "string",
                    "description": "On a 500: the request's id in our logs (the X-Request-ID header).",
                },
            },
        }
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
    """Say what the server does: request bodies refuse unknown fields (StrictSerializer), and
    a decimal string has at least one digit (drf-spectacular's pattern also admits "" and "-")."""
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema.setdefault("additionalProperties", False)
        for prop in schema.get("properties", {}).values():
            pattern = prop.get("pattern")
            if prop.get("format") == "decimal" and pattern and pattern.startswith("^-?\\d{0,"):
                prop["pattern"] = pattern.replace("^-?\\d{0,", "^-?\\d{1,", 1)


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
    schemas[ERROR_COMPONENT] = _ERROR_SCHEMA
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
