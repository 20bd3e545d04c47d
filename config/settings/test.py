"""Tests: PostgreSQL and Redis, as in production; fast password hashing."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/compute_grid")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("STRIPE_CONFIRM_OFF_SESSION", "false")  # localstripe refuses it on confirm

from config.settings.base import *  # noqa: F403

BILLING_AS_OF_ALLOWED = True  # manage.py settle --as-of: month end as of a later moment

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# The suite is not rate-limited; the throttle tests set low limits themselves.
API_RATE_LIMITS = {scope: (1_000_000, 60) for scope in API_RATE_LIMITS}  # noqa: F405
API_RATE_LIMITS_PER_ORGANIZATION = {scope: (1_000_000, 60) for scope in API_RATE_LIMITS_PER_ORGANIZATION}  # noqa: F405
AUTH_FAILURE_RATE_LIMIT = (1_000_000, 60)
API_KEYS_PER_ORGANIZATION = 1_000_000  # the suite makes a key per client; the cap's tests set it

# The suite's pages read in English whatever province an organization is in; the language tests
# (tests/dashboards/test_languages.py) set the production default, Chinese, back.
DEFAULT_LANGUAGE_IN_MAINLAND = "en"
