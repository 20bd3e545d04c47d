from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.bank_credits import give_back_to_bank, pay_from_bank
        from billing.services import invoices
        from billing.services.bank.holds import hold_release, hold_take
        from billing.services.usage import usage_hours_reprice
        from billing.voucher_credits import redeem_vouchers, reverse_vouchers
        from marketplace import hooks
        from pools import hooks as pool_hooks

        if redeem_vouchers not in invoices.VOUCHER_HOOKS:
            invoices.VOUCHER_HOOKS.append(redeem_vouchers)
            invoices.VOID_HOOKS.append(reverse_vouchers)
        # Vouchers first, then the bank (docs/architecture.md, "Money paths and their order").
        if pay_from_bank not in invoices.BANK_HOOKS:
            invoices.BANK_HOOKS.append(pay_from_bank)
            invoices.VOID_HOOKS.append(give_back_to_bank)
        if hold_take not in hooks.LEASE_START_HOOKS:
            hooks.LEASE_START_HOOKS.append(hold_take)
            hooks.LEASE_END_HOOKS.append(hold_release)
        if usage_hours_reprice not in pool_hooks.PRICE_VERSION_HOOKS:
            pool_hooks.PRICE_VERSION_HOOKS.append(usage_hours_reprice)
