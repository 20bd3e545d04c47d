"""List the space computing constellation: the orbit hub and its 12 satellites as pools of a provider."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from orbit.services import constellation_register
from organizations.models import Organization
from organizations.services import organization_create


class Command(BaseCommand):
    help = "List the orbit hub's 12 computing satellites (generated elements) as active pools of a provider."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", default="orbit-constellation", help="Provider slug (made if missing).")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = Organization.objects.filter(slug=options["provider"]).first() or organization_create(
            kind=Organization.Kind.PROVIDER,
            slug=options["provider"],
            legal_name="Space Computing Constellation Co.",
            credit_code="91330000MA2H7RB1TA",
            province="Zhejiang",
        )
        satellites = constellation_register(provider=provider, by="seed_orbit")
        self.stdout.write(f"{len(satellites)} satellites in the orbit hub, provider {provider.slug}")
