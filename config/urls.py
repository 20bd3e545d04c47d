from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing.metrics import RollupLagCollector
from core.health import healthz, readyz
from core.metrics import MetricsView, QueueLengthCollector
from pools.metrics import PoolsCollector

api_v1 = [
    path("", include("organizations.urls")),
    path("", include("pools.urls")),
    path("", include("orbit.urls")),
    path("", include("vouchers.urls")),
    path("", include("marketplace.urls")),
    path("", include("billing.urls")),
    path("", include("settlements.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Operators only (METRICS_TOKEN); the figures read from the database and the broker are computed per scrape.
    path(
        "metrics",
        MetricsView.as_view(
            collectors=[
                ("pools", PoolsCollector()),
                ("usage_rollups", RollupLagCollector()),
                ("celery_queues", QueueLengthCollector()),
            ]
        ),
        name="metrics",
    ),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboards.urls")),
]

handler404 = "core.views.not_found"
handler500 = "core.views.server_error"
