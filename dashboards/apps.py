from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    """Server-rendered pages for people: the top of the layering, imported by nothing."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "dashboards"
