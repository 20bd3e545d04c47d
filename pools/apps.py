from django.apps import AppConfig


class PoolsConfig(AppConfig):
    name = "pools"
    verbose_name = "Pools"

    def ready(self) -> None:
        from pools import receivers  # noqa: F401  connects the signal receivers
