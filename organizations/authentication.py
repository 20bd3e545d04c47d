from dataclasses import dataclass
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils.translation import gettext
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.context import origin_identify
from core.exceptions import RateLimited
from core.throttling import auth_failure_record, auth_failures_check
from organizations.models import ApiKey, Organization
from organizations.services import api_key_authenticate


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organization, through one of its API keys."""

    organization: Organization
    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def organization_id(self) -> Any:
        return self.organization.pk

    @property
    def pk(self) -> Any:
        return self.api_key.pk

    @property
    def kind(self) -> str:
        return self.organization.kind

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer cg_<prefix>_<secret>``."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        auth_failures_check(request._request)
        scheme, _, raw_key = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not raw_key.strip():
            auth_failure_record(request._request)
            raise exceptions.AuthenticationFailed(gettext("Use 'Authorization: Bearer <api key>'."))
        api_key = api_key_authenticate(raw_key=raw_key.strip())
        if api_key is None:
            auth_failure_record(request._request)
            raise exceptions.AuthenticationFailed(gettext("This API key is unknown or revoked."))
        request._request.organization = api_key.organization  # type: ignore[attr-defined]
        origin_identify(organization_id=api_key.organization_id, api_key_prefix=api_key.prefix)
        return Principal(organization=api_key.organization, api_key=api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class SignInBackend(ModelBackend):
    """Django's username and password sign-in (the dashboards, the admin), with failed sign-ins
    counted per client address: past settings.AUTH_FAILURE_RATE_LIMIT the address's sign-ins
    fail, its passwords unchecked, until the window ends (the dashboards' page says so, 429)."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if request is None:  # not over HTTP (a test client's login, a shell)
            return super().authenticate(request, username, password, **kwargs)
        try:
            auth_failures_check(request)
        except RateLimited:
            raise PermissionDenied from None  # django.contrib.auth.authenticate stops at it: no user
        user = super().authenticate(request, username, password, **kwargs)
        if user is None:
            auth_failure_record(request)
        return user
