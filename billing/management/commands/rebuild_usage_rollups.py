from typing import Any

from django.core.management.base import BaseCommand

from billing.services.usage import usage_rollups_rebuild


class Command(BaseCommand):
    help = "Recompute every hourly usage rollup from the raw usage events (safe to run at any time)."

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(done: int, total: int) -> None:
            if done == total or done % 100 == 0:
                self.stderr.write(f"  leases {done:,}/{total:,}")

        written = usage_rollups_rebuild(progress=progress)
        self.stdout.write(f"Rebuilt {written:,} rollup rows.")
