"""Settlements on the dashboards, one self-contained panel per kind of page:
``{% load settlements_panels %}{% settlements_panel organization %}``."""

from typing import Any

from django import template
from django.utils import timezone

from organizations.models import Organization
from settlements.selectors import claims_of, money_owed, payouts_of

register = template.Library()


@register.inclusion_tag("dashboards/partials/settlements.html")
def settlements_panel(organization: Organization) -> dict[str, Any]:
    now = timezone.now()
    context: dict[str, Any] = {"kind": organization.kind, "slug": organization.slug}
    if organization.kind == Organization.Kind.PROVIDER:
        context["payouts"] = list(payouts_of(provider=organization)[:12])
    elif organization.kind in (Organization.Kind.ISSUER, Organization.Kind.OPERATOR):
        context["claims"] = list(claims_of(organization=organization, now=now)[:24])
    if organization.kind == Organization.Kind.OPERATOR:
        context["owed"] = money_owed(now=now)
    return context
