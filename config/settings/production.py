"""Production: HTTPS only, secure cookies; SECRET_KEY, ALLOWED_HOSTS, METRICS_TOKEN and the Stripe
account's own STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET must be set."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_str
from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, DEBUG, PUBLIC_STRIPE_DEFAULTS, STRIPE_API_KEY, STRIPE_WEBHOOK_SECRET

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off with production settings.")
if not DATABASES:
    raise ImproperlyConfigured(
        "Set DATABASE_URL=postgres://user:password@host:5432/dbname (production has no embedded database)."
    )

# A missing token stops the start rather than leaving /metrics refused: a service nobody can
# watch should be found at deploy time, not when an alert that never fired is looked for.
METRICS_TOKEN = env_str("METRICS_TOKEN")
if len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters (e.g. secrets.token_urlsafe(32)).")

# The defaults are public: with them anyone could sign a webhook this service believes.
for _name, _value in {"STRIPE_API_KEY": STRIPE_API_KEY, "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET}.items():
    if _value in ("", PUBLIC_STRIPE_DEFAULTS[_name]):
        raise ImproperlyConfigured(f"Set {_name} to your Stripe account's own value (the default is public).")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, min_value=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
