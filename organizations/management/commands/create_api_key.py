from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.context import runs_as_command
from core.exceptions import ApplicationError
from organizations.models import ApiKey, Organization
from organizations.services import api_key_create


class Command(BaseCommand):
    help = "Print a new API key for an organization. The key is shown once; store it now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organization's slug.")
        parser.add_argument("--name", default="created by create_api_key")
        parser.add_argument("--role", default=ApiKey.Role.ADMIN, choices=ApiKey.Role.values)

    @runs_as_command
    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            known = ", ".join(Organization.objects.order_by("slug").values_list("slug", flat=True)[:10])
            raise CommandError(f"No organization with slug {options['org']!r}. Some that exist: {known or 'none'}.")
        try:
            _, raw_key = api_key_create(
                organization=organization,
                name=options["name"],
                role=options["role"],
                created_by="command:create_api_key",
            )
        except ApplicationError as refused:
            raise CommandError(refused.message) from None
        self.stdout.write(raw_key)
