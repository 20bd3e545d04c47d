import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from pools.models import ResourcePool
from pools.services import pool_heartbeat


class Command(BaseCommand):
    help = (
        "Stand in for the providers' agents in a demo: report every active pool's cards as healthy, "
        "once or every --every seconds, so that pools stay fresh in the market."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=int, default=0, help="Repeat every N seconds (default: once).")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            now = timezone.now()
            pools = list(ResourcePool.objects.filter(status=ResourcePool.Status.ACTIVE).order_by("pk"))
            for pool in pools:
                pool_heartbeat(pool=pool, healthy_cards=pool.cards, observed_at=now)
            self.stdout.write(f"{now:%H:%M:%S} heartbeat sent for {len(pools)} pools")
            if options["every"] <= 0:
                return
            time.sleep(options["every"])
