"""One error path: every failure becomes ``{"error": {"code", "message", "fields"}}``.

Messages are in the request's language (``Accept-Language``, core.languages), as gettext gives
them when the error is raised or answered; the ``code``s never change. DRF's own details come
translated by DRF's catalog."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.utils.translation import gettext, gettext_noop
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.exceptions import ApplicationError

logger = logging.getLogger(__name__)

_CODES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.ParseError: ("malformed_json", gettext_noop("The request body is not valid JSON: {detail}")),
    exceptions.NotAuthenticated: (
        "not_authenticated",
        gettext_noop("Send an API key as 'Authorization: Bearer <key>'."),
    ),
    exceptions.AuthenticationFailed: ("authentication_failed", "{detail}"),
    exceptions.PermissionDenied: ("permission_denied", "{detail}"),
    exceptions.NotFound: ("not_found", "{detail}"),
    exceptions.MethodNotAllowed: ("method_not_allowed", "{detail}"),
    exceptions.NotAcceptable: ("not_acceptable", "{detail}"),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "{detail}"),
    exceptions.Throttled: ("rate_limited", "{detail}"),
}


def error_body(
    code: str, message: str, fields: dict[str, Any] | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}, **(details or {})}}


def _field_errors(detail: Any) -> dict[str, Any]:
    """DRF's nested ErrorDetail tree as ``{field: [{"code", "message"}]}``."""
    if isinstance(detail, dict):
        return {str(key): _field_errors(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            return [{"code": _code(item), "message": str(item)} for item in detail]  # type: ignore[return-value]
        return {str(index): _field_errors(item) for index, item in enumerate(detail) if item}
    return [{"code": _code(detail), "message": str(detail)}]  # type: ignore[return-value]


def _code(detail: Any) -> str:
    """Every problem has a code: a Django form's error (a list's filters) may come without one."""
    return getattr(detail, "code", None) or "invalid"


def _validation_response(exc: exceptions.ValidationError) -> Response:
    detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
    fields = _field_errors(detail)
    codes = {error["code"] for errors in fields.values() if isinstance(errors, list) for error in errors}
    code = "unknown_field" if codes == {"unknown_field"} else "validation_error"
    names = ", ".join(name for name in fields if name != "non_field_errors")
    message = (
        gettext("Some fields are invalid (%(names)s); see 'fields' for each problem.") % {"names": names}
        if names
        else (_first_message(fields) or gettext("The request is invalid."))
    )
    return Response(error_body(code, message, fields), status=400)


def _first_message(fields: dict[str, Any]) -> str | None:
    for errors in fields.values():
        if isinstance(errors, list) and errors:
            return str(errors[0]["message"])
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(
            error_body(exc.code, exc.message, exc.fields, exc.details), status=exc.status_code, headers=exc.headers
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        set_rollback()
        message = gettext("The request body is too large: %(reason)s") % {"reason": exc}
        return Response(error_body("payload_too_large", message), status=413)
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django answers 500 and logs it

    set_rollback()
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]

    if isinstance(exc, exceptions.ValidationError):
        response = _validation_response(exc)
    else:
        code, template = _CODES.get(type(exc), (str(exc.default_code), "{detail}"))
        response = Response(error_body(code, gettext(template).format(detail=exc.detail)), status=exc.status_code)
    for name, value in headers.items():
        response[name] = value
    return response
