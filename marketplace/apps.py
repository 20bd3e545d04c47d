from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from marketplace import receivers  # noqa: F401  connects the signal receivers
        from marketplace.selectors import price_change_effects
        from marketplace.services import price_rise_notify
        from marketplace.token_services import endpoint_token_orders_settle
        from pools import hooks

        if price_rise_notify not in hooks.PRICE_VERSION_HOOKS:
            hooks.PRICE_VERSION_HOOKS.append(price_rise_notify)
            hooks.PRICE_EFFECT_HOOKS.append(price_change_effects)
        if endpoint_token_orders_settle not in hooks.ENDPOINT_STATUS_HOOKS:
            hooks.ENDPOINT_STATUS_HOOKS.append(endpoint_token_orders_settle)
