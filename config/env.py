"""Read settings from the environment, failing loudly on a bad value.

Every helper raises ``ImproperlyConfigured`` naming the variable and what it
expected, so a typo in a deployment stops the process at start-up instead of
running with a silently wrong default.
"""

import ipaddress
import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    return (os.environ if environ is None else environ).get(name)


def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    return value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    normalized = value.strip().lower()
    if normalized in _TRUE:
        return True
    if normalized in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.")


def env_int(
    name: str,
    default: int,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if min_value is not None and number < min_value:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {min_value}.")
    if max_value is not None and number > max_value:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum {max_value}.")
    return number


def env_decimal(
    name: str,
    default: Decimal,
    *,
    min_value: Decimal | None = None,
    max_value: Decimal | None = None,
    environ: Mapping[str, str] | None = None,
) -> Decimal:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={value!r} is not a decimal number.") from None
    if not number.is_finite():
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number.")
    if min_value is not None and number < min_value:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {min_value}.")
    if max_value is not None and number > max_value:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum {max_value}.")
    return number


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int_list(name: str, default: list[int], *, environ: Mapping[str, str] | None = None) -> list[int]:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a comma-separated list of integers.") from None


def env_choice(name: str, default: str, choices: set[str], *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    if value is None:
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {sorted(choices)}.")
    return value


def env_database(name: str, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Django DATABASES entry from a URL such as ``postgres://user@host:5432/db``."""
    value = env_str(name, environ=environ)
    if not value.startswith(("postgres://", "postgresql://")):
        raise ImproperlyConfigured(f"{name}={value!r}: use a postgres://user:password@host:5432/dbname URL.")
    try:
        config = dict(dj_database_url.parse(value, conn_max_age=60, conn_health_checks=True))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not a database URL: {exc}") from None
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}={value!r} names no database.")
    return config


def env_redis_url(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, environ)
    if not value:
        return None
    if not value.startswith(("redis://", "rediss://")):
        raise ImproperlyConfigured(f"{name}={value!r}: use a redis:// or rediss:// URL.")
    return value


_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def env_rate(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """A rate limit such as ``600/min`` as (requests, seconds); periods s, min, hour, day."""
    value = _raw(name, environ) or default
    count, _, period = value.strip().partition("/")
    if not count.strip().isdigit() or int(count) < 1 or period.strip().lower() not in _PERIODS:
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate: use e.g. 600/min (periods: s, min, hour, day).")
    return int(count), _PERIODS[period.strip().lower()]


def env_networks(
    name: str, *, environ: Mapping[str, str] | None = None
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated addresses or CIDR blocks (``10.0.0.0/8, 192.0.2.7``); empty by default."""
    networks = []
    for item in env_list(name, [], environ=environ):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or CIDR block.") from None
    return networks
