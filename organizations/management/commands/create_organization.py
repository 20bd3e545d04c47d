from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from organizations.models import Organization
from organizations.services import organization_create


class Command(BaseCommand):
    help = "Create an organization (buyer, provider, issuer or operator)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, choices=Organization.Kind.values)
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True, help="Legal name.")
        parser.add_argument("--credit-code", required=True, help="18-character unified social credit code.")
        parser.add_argument("--province", required=True)
        parser.add_argument("--city", default="")
        parser.add_argument("--sme", action="store_true", help="A small or medium enterprise.")
        parser.add_argument("--parent", help="Slug of the group's parent organization.")

    def handle(self, *args: Any, **options: Any) -> None:
        parent = None
        if options["parent"]:
            parent = Organization.objects.filter(slug=options["parent"]).first()
            if parent is None:
                raise CommandError(f"No organization with slug {options['parent']!r}.")
        try:
            organization = organization_create(
                kind=options["kind"],
                slug=options["slug"],
                legal_name=options["name"],
                credit_code=options["credit_code"],
                province=options["province"],
                city=options["city"],
                is_sme=options["sme"],
                parent=parent,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            raise CommandError(problems) from None
        self.stdout.write(f"Created {organization.kind} {organization.slug} ({organization.pk}).")
