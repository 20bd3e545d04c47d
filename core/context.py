"""Where the current call comes from: an HTTP request or a management command.

The request-id middleware sets it for each request; the API key authentication adds
who is calling; commands that change what the audit trail records set it for their
run. Services that write an audit event read it here, so that a service keeps a
signature about its domain and is called alike from the API, the admin and commands.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The peer's address. X-Forwarded-For is not read: any client can send it, so it would let
    a caller choose its own rate-limit bucket and audit address."""
    return request.META.get("REMOTE_ADDR") or None


@dataclass(frozen=True)
class Origin:
    """``source`` is ``http`` for a request, ``command:<name>`` for a management command,
    ``system`` for anything else (a Celery task, a shell)."""

    source: str = "system"
    ip: str | None = None
    user_agent: str = ""
    request_id: str = ""
    organization_id: Any = None
    api_key_prefix: str = ""


origin_var: ContextVar[Origin] = ContextVar("origin", default=Origin())  # noqa: B039  # frozen


def current_origin() -> Origin:
    return origin_var.get()


def origin_identify(*, organization_id: Any, api_key_prefix: str) -> None:
    """The request's caller is now known (set by the authentication, after the middleware)."""
    origin_var.set(replace(origin_var.get(), organization_id=organization_id, api_key_prefix=api_key_prefix))


@contextmanager
def command_origin(name: str) -> Iterator[None]:
    token = origin_var.set(Origin(source=f"command:{name}"))
    try:
        yield
    finally:
        origin_var.reset(token)


def runs_as_command(handle: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a management command's ``handle``: what it does is recorded as ``command:<name>``."""
    name = handle.__module__.rsplit(".", 1)[-1]

    @functools.wraps(handle)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with command_origin(name):
            return handle(*args, **kwargs)

    return wrapper
