from collections.abc import Callable, Iterable, Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import translation
from django.utils.cache import patch_vary_headers

from organizations.languages import request_language


class LanguageMiddleware:
    """Answer in the request's language (``organizations.languages.request_language``): gettext,
    the templates' ``{% translate %}``, the PDFs, the CSV reports and the API's error messages
    follow it. The answer says which in ``Content-Language`` and varies by ``Accept-Language``.
    It runs after ``AuthenticationMiddleware``, which tells it the member."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        language = request_language(request)
        with translation.override(language):
            request.LANGUAGE_CODE = language  # type: ignore[attr-defined]
            response = self.get_response(request)
        if isinstance(response, StreamingHttpResponse):  # a CSV report, written after the view returns
            response.streaming_content = _in_language(response.streaming_content, language)
        response.headers.setdefault("Content-Language", language)
        patch_vary_headers(response, ["Accept-Language"])
        return response


def _in_language(chunks: Iterable[bytes], language: str) -> Iterator[bytes]:
    iterator = iter(chunks)
    while True:
        with translation.override(language):
            chunk = next(iterator, None)
        if chunk is None:
            return
        yield chunk
