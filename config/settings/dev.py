"""Local development: the embedded default with DEBUG on and a throwaway secret."""

import os

os.environ.setdefault("SECRET_KEY", "dev-insecure-secret-key-do-not-use-in-production")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("LOG_FORMAT", "text")

from config.settings.base import *  # noqa: F403

BILLING_AS_OF_ALLOWED = True  # manage.py settle --as-of: month end as of a later moment
