"""The language a client asks for in ``Accept-Language``, among those the service speaks
(settings.LANGUAGES): what the API answers its messages in. The dashboards' members choose theirs
(organizations.languages)."""

from django.conf import settings
from django.http import HttpRequest
from django.utils import translation
from django.utils.translation.trans_real import parse_accept_lang_header


def accepted_language(request: HttpRequest) -> str | None:
    """The first language of ``Accept-Language`` the service speaks (``zh-CN`` -> ``zh-hans``)."""
    for code, _quality in parse_accept_lang_header(request.headers.get("Accept-Language", "")):
        if code == "*":
            break
        try:
            return translation.get_supported_language_variant(code)
        except LookupError:
            continue
    return None


def api_language(request: HttpRequest) -> str:
    return accepted_language(request) or str(settings.LANGUAGE_CODE)
