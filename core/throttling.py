"""Rate limits per API key, counted in the cache (Redis; local memory in the embedded default).

A fixed window per scope and caller: the first request of a window creates its counter
(``add``), every request increments it (``incr``, atomic in Redis, so concurrent web
processes share one count), and a request past the limit is a 429 that says the limit
and, in ``Retry-After``, when the window ends. Views name their scope with
``throttle_scope`` (default ``default``); the limits are settings.API_RATE_LIMITS.
"""

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from core.context import client_ip
from core.exceptions import RateLimited

logger = logging.getLogger(__name__)

_PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def _caller(request: Request) -> str:
    key_id = getattr(request.user, "pk", None) if request.user is not None else None
    return f"key:{key_id}" if key_id is not None else f"ip:{client_ip(request._request)}"


def describe(limit: int, period: int) -> str:
    name = _PERIOD_NAMES.get(period)
    return f"{limit} requests per {name}" if name else f"{limit} requests per {period} seconds"


class ScopedRateThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        scope = getattr(view, "throttle_scope", "default")
        limit, period = settings.API_RATE_LIMITS[scope]
        caller = _caller(request)
        now = time.time()
        window = int(now // period)
        key = f"throttle:{scope}:{caller}:{window}"
        try:
            cache.add(key, 0, timeout=period + 1)
            count = cache.incr(key)
        except ValueError:  # the counter expired between add and incr: this is the window's first request
            cache.set(key, 1, timeout=period + 1)
            count = 1
        except (RedisError, OSError):
            # Without the cache there is no count: serve rather than refuse everyone (the broker is down too).
            logger.warning("rate limit not checked: the cache is unavailable", exc_info=True)
            return True
        if count <= limit:
            return True
        retry_after = max(1, math.ceil((window + 1) * period - now))
        who = "this API key" if caller.startswith("key:") else "this address"
        raise RateLimited(
            f"Rate limit exceeded: {describe(limit, period)} for {who} on {scope} requests. Retry in {retry_after} s.",
            retry_after=retry_after,
            details={"limit": limit, "period_seconds": period, "scope": scope},
        )
