from django.apps import AppConfig


class SettlementsConfig(AppConfig):
    name = "settlements"
    verbose_name = "Settlements"

    def ready(self) -> None:
        from billing.services import reconcile as billing_reconcile
        from settlements.reconcile import settlements_reconcile

        # reconcile lives in billing, below: it runs settlements' checks by this seam.
        if settlements_reconcile not in billing_reconcile.RECONCILE_CHECKS:
            billing_reconcile.RECONCILE_CHECKS.append(settlements_reconcile)
