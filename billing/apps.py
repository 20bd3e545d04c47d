from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.selectors import fapiao_numbers_by_invoice
        from billing.services.bank.holds import hold_release, hold_take
        from billing.services.usage import usage_hours_reprice
        from marketplace import hooks
        from pools import hooks as pool_hooks
        from vouchers.documents import fapiao_lookup_register

        # The marketplace is below billing: it calls these inside its own transactions.
        if hold_take not in hooks.LEASE_START_HOOKS:
            hooks.LEASE_START_HOOKS.append(hold_take)
            hooks.LEASE_END_HOOKS.append(hold_release)
        if usage_hours_reprice not in pool_hooks.PRICE_VERSION_HOOKS:
            pool_hooks.PRICE_VERSION_HOOKS.append(usage_hours_reprice)
        fapiao_lookup_register(fapiao_numbers_by_invoice)  # the issuer's report shows the invoices' fapiao
