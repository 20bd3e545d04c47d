"""Local development and the demo: DEBUG on, a throwaway secret, and with no DATABASE_URL
an embedded PostgreSQL under DATA_DIR (started here, stopped when its last process exits)."""

import os

os.environ.setdefault("SECRET_KEY", "dev-insecure-secret-key-do-not-use-in-production")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("LOG_FORMAT", "text")

from config.settings.base import *  # noqa: F403
from config.settings.base import DATA_DIR, DATABASES

if not DATABASES:
    from config.embedded_database import embedded_database

    DATABASES = {"default": embedded_database(DATA_DIR)}

BILLING_AS_OF_ALLOWED = True  # manage.py settle --as-of: month end as of a later moment
