"""Where the current call comes from: an HTTP request or a management command.

The request-id middleware sets it for each request; the API key authentication adds
who is calling; commands that change what the audit trail records set it for their
run. Services that write an audit event read it here, so that a service keeps a
signature about its domain and is called alike from the API, the admin and commands.
"""

import functools
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.http import HttpRequest


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, for rate limits and the audit trail: the peer's (REMOTE_ADDR), or,
    when the peer is a trusted proxy (settings.TRUSTED_PROXIES), the right-most address of
    X-Forwarded-For that is not a trusted proxy. Each proxy appends the address it saw, so what
    lies left of that one is the client's to choose, and is never read; without a trusted proxy
    the header is not read at all."""
    peer = request.META.get("REMOTE_ADDR") or None
    if peer is None or not _trusted(peer):
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:  # not written by a proxy we trust: fall back to the one that sent it
                return peer
    return hops[0] if hops else peer  # every hop a trusted proxy: the farthest


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
