from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from core.exception_handler import error_body


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"No such path: {request.path}"), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            error_body("internal_error", "Something went wrong on our side; it was logged. Retry later."),
            status=500,
        )
    return defaults.server_error(request)
