import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import is_valid_path
from django.utils import translation

from core.context import Origin, client_ip, origin_var
from core.exception_handler import error_body
from core.languages import api_language
from core.logging import request_id_var
from core.views import api_error, api_not_found, is_api

logger = logging.getLogger("compute_grid.request")

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestIdMiddleware:
    """Tag each request with an id (the client's X-Request-ID if sane) and log it once."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        client_id = request.headers.get("X-Request-ID", "")
        request_id = client_id if _CLIENT_REQUEST_ID.match(client_id) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        origin_token = origin_var.set(
            Origin(
                source="http",
                ip=client_ip(request),
                user_agent=request.headers.get("User-Agent", "")[:300],
                request_id=request_id,
            )
        )
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            logger.info(
                "%s %s %s %sms",
                request.method,
                request.path,
                response.status_code,
                duration_ms,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                    "organization": getattr(getattr(request, "organization", None), "slug", None),
                },
            )
            return response
        finally:
            origin_var.reset(origin_token)
            request_id_var.reset(token)


class ApiErrorMiddleware:
    """Under /api/, every failure is the API's error body, with DEBUG on too.

    With DEBUG off Django answers an unknown path and an uncaught exception through the
    handlers in ``core.views``; with DEBUG on it answers with its HTML debug pages instead
    (``technical_404_response``, ``technical_500_response``), and no handler is asked. So an
    error answer under /api/ that is not JSON is replaced here by the body the handlers give:
    a 404 ``not_found``, a 500 ``server_error`` with the request id. By then Django has logged
    the exception with its traceback (logger ``django.request``, with the request id) and sent
    ``got_request_exception``, so the test client still raises it. It sits inside
    ``RequestIdMiddleware``, which adds the ``X-Request-ID`` header; pages outside /api/
    (admin, dashboards) keep Django's pages.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api(request):
            return self.get_response(request)
        # Its answers come before and after LanguageMiddleware's, in Accept-Language's language too.
        language = api_language(request)
        with translation.override(language):
            response = self._answer(request)
        response.headers.setdefault("Content-Language", language)
        return response

    def _answer(self, request: HttpRequest) -> HttpResponse:
        if _slash_missing(request):
            return api_not_found(request, did_you_mean=f"{request.path}/")
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            replacement = api_error(request, response.status_code)
            # Django logs an error answer once (django.utils.log.log_response marks it); the
            # replacement of one it logged, traceback included, is not logged a second time.
            replacement._has_been_logged = getattr(response, "_has_been_logged", False)  # type: ignore[attr-defined]
            return replacement
        return response


def _slash_missing(request: HttpRequest) -> bool:
    """A write to an API path without its trailing slash. Django's CommonMiddleware would redirect
    it (and a redirected POST loses its body) or, with DEBUG on, fail with a 500; a GET is still
    redirected."""
    path = request.path_info
    if request.method in ("GET", "HEAD") or path.endswith("/") or not settings.APPEND_SLASH:
        return False
    urlconf = getattr(request, "urlconf", None)
    return not is_valid_path(path, urlconf) and bool(is_valid_path(f"{path}/", urlconf))


def _is_json(response: HttpResponse) -> bool:
    media_type = response.get("Content-Type", "").split(";")[0].strip()
    return media_type == "application/json" or media_type.endswith("+json")


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


class RequestLimitsMiddleware:
    """Refuse, before any API view runs, a body above its view's limit (413) and a query string
    with a NUL character (400; PostgreSQL text cannot hold one). The admin and the dashboards
    (forms, uploads) keep Django's own limits.

    The limit is the view's ``max_body_bytes`` (usage ingestion takes 10 MB), else
    API_MAX_BODY_BYTES. It is read from Content-Length; a body sent without one is capped by
    Django's DATA_UPLOAD_MAX_MEMORY_SIZE when it is read.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., HttpResponse], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
        limit = getattr(view_class, "max_body_bytes", settings.API_MAX_BODY_BYTES)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > limit:
            message = translation.gettext(
                "The request body is %(length)s bytes; this endpoint takes at most %(limit)s bytes (%(size)s)."
            ) % {"length": int(length), "limit": limit, "size": _megabytes(limit)}
            body = error_body("payload_too_large", message, details={"limit_bytes": limit})
            return JsonResponse(body, status=413)
        if "%00" in request.META.get("QUERY_STRING", ""):
            body = error_body(
                "invalid_query", translation.gettext("The query string may not contain NUL characters (%00).")
            )
            return JsonResponse(body, status=400)
        return None
