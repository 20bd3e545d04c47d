"""Rate limits per API key and per organization, and failed authentications per client address,
counted in the cache (Redis; local memory in the embedded default).

A fixed window per bucket: every request increments its window's counter (atomic in Redis,
so concurrent web processes share one count; the first count sets the counter to expire with
its window), and a request past the limit is a 429 that says the limit and, in
``Retry-After``, when the window ends. Views name their scope with ``throttle_scope``
(default ``default``). A request with a key counts in its key's bucket
(settings.API_RATE_LIMITS) and then in its organization's (API_RATE_LIMITS_PER_ORGANIZATION),
so that more keys do not buy more requests; one without a key counts in its address's.
Failed authentications (unknown, revoked or malformed API keys, bad sign-ins) count
per client address (settings.AUTH_FAILURE_RATE_LIMIT); an address past the limit is refused
before its credentials are even checked, until the window ends.
"""

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from django.utils.translation import gettext
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from core.context import client_ip
from core.exceptions import RateLimited

logger = logging.getLogger(__name__)

_PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
AUTH_FAILURES_SCOPE = "auth_failures"


def _caller(request: Request) -> str:
    key_id = getattr(request.user, "pk", None) if request.user is not None else None
    return f"key:{key_id}" if key_id is not None else f"ip:{client_ip(request._request)}"


def describe(limit: int, period: int) -> str:
    name = _PERIOD_NAMES.get(period)
    return f"{limit} requests per {name}" if name else f"{limit} requests per {period} seconds"


def _window(period: int) -> tuple[int, int]:
    """The current window's number and the seconds until it ends."""
    now = time.time()
    window = int(now // period)
    return window, max(1, math.ceil((window + 1) * period - now))


def _count(key: str, period: int) -> int | None:
    """Add one to a window's counter and return it; None when the cache is down."""
    try:
        cache.add(key, 0, timeout=period + 1)
        return int(cache.incr(key))
    except ValueError:  # the counter expired between add and incr: this is the window's first count
        cache.set(key, 1, timeout=period + 1)
        return 1
    except (RedisError, OSError):
        # Without the cache there is no count: serve rather than refuse everyone (the broker is down too).
        logger.warning("rate limit not checked: the cache is unavailable", exc_info=True)
        return None


# cache.add then cache.incr for each counter, in one command: a counter's first count sets its expiry.
_COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
    counts[i] = redis.call('INCR', key)
    if counts[i] == 1 then
        redis.call('EXPIRE', key, ARGV[i])
    end
end
return counts
"""


def _redis() -> Any | None:
    """The cache's Redis client, made once per process and thread (Django's RedisCache makes a
    client, with its ~170 response callbacks, for every call), or None when the cache is not Redis."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    client = getattr(backend, "_throttle_client", None)
    if client is None:
        client = backend._cache.get_client(write=True)
        backend._throttle_client = client  # type: ignore[attr-defined]
        backend._throttle_count = client.register_script(_COUNT_SCRIPT)  # type: ignore[attr-defined]
    return client


def _count_all(keys: list[tuple[str, int]]) -> list[int | None]:
    """``_count`` for several (key, period) counters, in one command to Redis (_COUNT_SCRIPT)."""
    client = _redis()
    if client is None:
        return [_count(key, period) for key, period in keys]
    backend = caches["default"]
    try:
        counts = backend._throttle_count(  # type: ignore[attr-defined]
            keys=[backend.make_and_validate_key(key) for key, _ in keys], args=[period + 1 for _, period in keys]
        )
    except (RedisError, OSError):
        logger.warning("rate limit not checked: the cache is unavailable", exc_info=True)
        return [None for _ in keys]
    return [int(count) for count in counts]


def _refuse(*, scope: str, count: int | None, limit: int, period: int, retry_after: int, who: str) -> None:
    if count is not None and count > limit:
        raise RateLimited(
            gettext("Rate limit exceeded: %(describe)s for %(who)s on %(scope)s requests. Retry in %(retry_after)s s.")
            % {"describe": describe(limit, period), "who": who, "scope": scope, "retry_after": retry_after},
            retry_after=retry_after,
            details={"limit": limit, "period_seconds": period, "scope": scope},
        )


class ScopedRateThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        scope = getattr(view, "throttle_scope", "default")
        caller = _caller(request)
        limit, period = settings.API_RATE_LIMITS[scope]
        buckets = [(caller, limit, period, "this API key" if caller.startswith("key:") else "this address")]
        organization_id = getattr(request.user, "organization_id", None)
        if organization_id is not None and scope in settings.API_RATE_LIMITS_PER_ORGANIZATION:
            limit, period = settings.API_RATE_LIMITS_PER_ORGANIZATION[scope]
            buckets.append((f"org:{organization_id}", limit, period, "this organization's API keys together"))
        windows = [_window(period) for _, _, period, _ in buckets]
        counts = _count_all(
            [
                (f"throttle:{scope}:{bucket}:{window}", period)
                for (bucket, _, period, _), (window, _) in zip(buckets, windows, strict=True)
            ]
        )
        # The key's bucket first, then the organization's: the first refusal says which.
        for (_, limit, period, who), (_, retry_after), count in zip(buckets, windows, counts, strict=True):
            _refuse(scope=scope, count=count, limit=limit, period=period, retry_after=retry_after, who=who)
        return True


def _auth_failures_key(request: HttpRequest) -> tuple[str, int, int, int]:
    limit, period = settings.AUTH_FAILURE_RATE_LIMIT
    window, retry_after = _window(period)
    return f"throttle:{AUTH_FAILURES_SCOPE}:ip:{client_ip(request)}:{window}", limit, period, retry_after


def auth_failures_check(request: HttpRequest) -> None:
    """Refuse (429) an address that failed to authenticate too often in this window; call it
    before checking the credentials, so that a locked-out address learns nothing."""
    key, limit, period, retry_after = _auth_failures_key(request)
    try:
        client = _redis()
        stored = client.get(caches["default"].make_and_validate_key(key)) if client is not None else cache.get(key)
        failures = int(stored or 0)
    except (RedisError, OSError):
        logger.warning("failed authentications not checked: the cache is unavailable", exc_info=True)
        return
    if failures >= limit:
        raise RateLimited(
            gettext(
                "Too many failed authentications from this address: at most %(limit)s per "
                "%(get)s. Retry in %(retry_after)s s."
            )
            % {"limit": limit, "get": _PERIOD_NAMES.get(period, f"{period} seconds"), "retry_after": retry_after},
            retry_after=retry_after,
            details={"limit": limit, "period_seconds": period, "scope": AUTH_FAILURES_SCOPE},
        )


def auth_failure_record(request: HttpRequest) -> None:
    key, _, period, _ = _auth_failures_key(request)
    _count(key, period)
