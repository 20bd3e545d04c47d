"""JSON bodies as the database can keep them, and no deeper than the code can walk.

``parse_json`` reads every JSON body of the API: DRF's default parser (``JSONParser``) and
the usage ingest (``billing.cloudevents``), which reads its CloudEvents itself. It refuses,
each with its code (400): a body that is not JSON (``malformed_json``); nesting deeper than
``MAX_JSON_DEPTH`` (``json_too_deep``: Python's own parser and the code that walks a value
recurse, and 1,000 levels were a RecursionError); text that is not Unicode, such as a lone
surrogate ``"\\ud800"`` (``invalid_text``: PostgreSQL's jsonb and text refuse it).

A NUL character (``\\u0000``) is valid Unicode but PostgreSQL text cannot hold one either:
``has_nul`` finds it. The default parser refuses a body with one (``invalid_text``); the
usage ingest refuses only the event that has one, and keeps the rest of its batch.
"""

from typing import Any

import orjson
from django.utils.translation import gettext, gettext_noop
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Deeper than any body of this API (a usage event's data is 3 levels into its batch), far below
# the ~1,000 frames of Python's recursion limit.
MAX_JSON_DEPTH = 32
_CONTAINERS = (dict, list)


class JsonTooDeep(ParseError):
    default_code = "json_too_deep"


class InvalidText(ParseError):
    default_code = "invalid_text"


NUL_MESSAGE = gettext_noop("Text may not contain NUL characters (\\u0000): PostgreSQL cannot store them.")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` arrays or objects; level by level, without recursion."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) in _CONTAINERS
        ]
    return False


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; a 400 with its code when it is not JSON, not Unicode or too deep."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "depth limit" in reason:  # orjson's own limit, 1,024 levels
            raise JsonTooDeep(
                gettext("JSON may nest at most %(MAX_JSON_DEPTH)s arrays or objects.")
                % {"MAX_JSON_DEPTH": MAX_JSON_DEPTH}
            ) from None
        if "surrogate" in reason or "UTF-8" in reason:
            message = "Text must be UTF-8 without lone surrogates (such as \\ud800): PostgreSQL cannot store them"
            raise InvalidText(f"{message} ({reason}).") from None
        raise ParseError(reason) from None  # the error handler says: malformed_json
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise JsonTooDeep(
            gettext("JSON may nest at most %(MAX_JSON_DEPTH)s arrays or objects.") % {"MAX_JSON_DEPTH": MAX_JSON_DEPTH}
        )
    return value


def has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string, object key included, of a parsed JSON value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


class JSONParser(parsers.JSONParser):
    """DRF's default parser: ``parse_json``, and no NUL anywhere in the body."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        body = stream.read()
        value = parse_json(body)
        if b"\\u0000" in body and has_nul(value):  # JSON text has no raw NUL: only the escape makes one
            raise InvalidText(gettext(NUL_MESSAGE))
        return value
