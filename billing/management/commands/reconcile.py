from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.services.reconcile import reconcile


class Command(BaseCommand):
    help = "Recompute every balance from the ledger and from the source rows; exit non-zero on any difference."

    def handle(self, *args: Any, **options: Any) -> None:
        differences = reconcile()
        for difference in differences:
            self.stdout.write(str(difference))
        if differences:
            raise CommandError(f"{len(differences)} differences: the books do not reconcile.")
        self.stdout.write("The books reconcile: every balance equals its records.")
