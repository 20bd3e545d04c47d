"""Django's error handlers, and the error answers under /api/ that they and ``ApiErrorMiddleware`` give.

Under /api/ a failure is always the API's error body (``core.exception_handler``); the
admin and the dashboards keep Django's pages.
"""

from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext
from django.views import defaults

from core.exception_handler import error_body
from core.logging import request_id_var


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def api_not_found(request: HttpRequest, *, did_you_mean: str | None = None) -> JsonResponse:
    hint = gettext("Did you mean %(path)s? ") % {"path": did_you_mean} if did_you_mean else ""
    message = gettext("No such path: %(path)s. %(hint)sThe API's paths are listed at /api/docs/.") % {
        "path": request.path,
        "hint": hint,
    }
    return JsonResponse(error_body("not_found", message), status=404)


def api_server_error(request: HttpRequest) -> JsonResponse:
    request_id = request_id_var.get()
    return JsonResponse(
        error_body(
            "server_error",
            gettext(
                "Something went wrong on our side; it was logged with request id %(request_id)s. "
                "Retry later, and quote the request id if you report it."
            )
            % {"request_id": request_id},
            details={"request_id": request_id},
        ),
        status=500,
    )


# Other failures Django answers itself (a disallowed Host header is a 400, say), by status.
_CODES = {400: "bad_request", 403: "permission_denied", 405: "method_not_allowed", 413: "payload_too_large"}


def _status_messages() -> dict[int, str]:
    return {
        400: gettext("Bad request."),
        403: gettext("Forbidden."),
        405: gettext("Method not allowed."),
        413: gettext("The request body is too large."),
    }


def api_error(request: HttpRequest, status: int) -> JsonResponse:
    """The error body for a failure Django answered with ``status`` before any API view could."""
    if status == 404:
        return api_not_found(request)
    if status >= 500:
        return api_server_error(request)
    phrase = HTTPStatus(status).phrase
    code = _CODES.get(status, phrase.lower().replace(" ", "_").replace("-", "_"))
    return JsonResponse(error_body(code, _status_messages().get(status) or f"{phrase}."), status=status)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return api_not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api(request):
        return api_server_error(request)
    return defaults.server_error(request)
