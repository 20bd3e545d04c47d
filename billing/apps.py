from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.services import invoices
        from billing.voucher_credits import redeem_vouchers, reverse_vouchers

        if redeem_vouchers not in invoices.VOUCHER_HOOKS:
            invoices.VOUCHER_HOOKS.append(redeem_vouchers)
            invoices.VOID_HOOKS.append(reverse_vouchers)
