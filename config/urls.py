from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.health import healthz, readyz

api_v1 = [
    path("", include("organizations.urls")),
    path("", include("pools.urls")),
    path("", include("vouchers.urls")),
    path("", include("marketplace.urls")),
    path("", include("billing.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("", include("django_prometheus.urls")),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboards.urls")),
]

handler404 = "core.views.not_found"
handler500 = "core.views.server_error"
