from django.apps import AppConfig


class OrganizationsConfig(AppConfig):
    name = "organizations"
    verbose_name = "Organizations"

    def ready(self) -> None:
        from organizations import schema  # noqa: F401  registers the OpenAPI auth scheme
