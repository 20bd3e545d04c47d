import secrets
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from core.context import runs_as_command
from organizations.models import Membership, Organization
from organizations.services import api_key_create, member_set, organization_create
from organizations.validators import credit_code_check_char

DEMO_ORGANIZATIONS = [
    # kind, slug, legal name, province, city, SME
    ("operator", "grid-operator", "Compute Grid Platform Operations Co., Ltd.", "Beijing", "Beijing", False),
    ("provider", "west-cloud", "Ningxia West Cloud Computing Co., Ltd.", "Ningxia", "Zhongwei", False),
    ("buyer", "hz-vision", "Hangzhou Vision AI Technology Co., Ltd.", "Zhejiang", "Hangzhou", True),
    ("issuer", "zj-compute-office", "Zhejiang Provincial Compute Voucher Office", "Zhejiang", "Hangzhou", False),
]


def demo_credit_code(index: int) -> str:
    first17 = f"91330100MA{index:07d}"
    return first17 + credit_code_check_char(first17)


class Command(BaseCommand):
    help = (
        "Create one organization of each kind with a fresh API key each and a member who signs in to the "
        "dashboards (a new password each run), and print them."
    )

    @transaction.atomic
    @runs_as_command
    def handle(self, *args: Any, **options: Any) -> None:
        lines = []
        for index, (kind, slug, name, province, city, sme) in enumerate(DEMO_ORGANIZATIONS, start=1):
            organization = Organization.objects.filter(slug=slug).first() or organization_create(
                kind=kind,
                slug=slug,
                legal_name=name,
                credit_code=demo_credit_code(index),
                province=province,
                city=city,
                is_sme=sme,
            )
            _, raw_key = api_key_create(organization=organization, name="demo", created_by="command:seed_demo")
            password = secrets.token_urlsafe(9)
            member_set(organization=organization, username=slug, password=password, role=Membership.Role.ADMIN)
            lines.append(f"{kind:<9} {slug:<20} {raw_key}  login {slug} {password}")
        keys_file = settings.DATA_DIR / "demo-keys.txt"
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        keys_file.write_text("\n".join(lines) + "\n")
        self.stdout.write(
            f"Demo organizations, their new API keys and dashboard logins (also in {keys_file});"
            " sign in at /dashboard/:"
        )
        for line in lines:
            self.stdout.write("  " + line)
