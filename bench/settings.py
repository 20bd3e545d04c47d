"""``config.settings.test`` served with ``bench/urls.py`` as the root URLconf (it adds ``/bare/``)."""

from config.settings.test import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
