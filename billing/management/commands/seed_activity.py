from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from billing.activity import demo_month
from core.context import runs_as_command
from organizations.management.commands.seed_demo import DEMO_ORGANIZATIONS
from organizations.models import Organization


class Command(BaseCommand):
    help = (
        "Give the demo organizations (seed_demo) a working month: the provider's pools with heartbeats, "
        "the buyer's leases with hourly usage, past invoices finalized (one overdue), a voucher program "
        "with redemptions and compute-bank credit. Does nothing once the demo provider has pools."
    )

    @transaction.atomic
    @runs_as_command
    def handle(self, *args: Any, **options: Any) -> None:
        slugs = {kind: slug for kind, slug, *_ in DEMO_ORGANIZATIONS}
        organizations = {kind: Organization.objects.get(slug=slug) for kind, slug in slugs.items()}
        if demo_month(now=timezone.now(), **organizations):
            self.stdout.write(f"    demo activity: a working month for {', '.join(slugs.values())}")
        else:
            self.stdout.write("    demo activity: already there")
