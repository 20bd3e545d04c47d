import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

application = get_wsgi_application()

# What start-up loaded (settings, URLs, models, apps) lives as long as the process: keep it out of
# the cyclic collector's scans. Young collections every 5,000 objects, not Python's 700 nor the
# 50,000 this used before: at 50,000 a young collection took 75 ms on whichever order met it (one in
# 200), at 5,000 it takes at most 6 ms and a middle one 9 ms, with no full collection in 1,000
# orders and less collector time in all (0.22 ms an order; docs/benchmarks.md).
gc.freeze()
gc.set_threshold(5_000, 10, 100)
