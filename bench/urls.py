"""The project's URLs plus ``GET /bare/``: a bare Django view, the floor any endpoint is compared against.

It runs through the same middleware as every endpoint but does no authentication,
no query and no serialization.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": 0, "results": []})


urlpatterns = [
    path("bare/", bare),
    path("", include("config.urls")),
]
