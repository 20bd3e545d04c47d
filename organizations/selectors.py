"""Reads of organizations."""

from collections.abc import Iterable
from typing import Any

from django.db.models import Q

from organizations.models import InvoicingDetails, Organization


def related_organizations(*, organization: Organization) -> frozenset[Any]:
    """The ids of the organizations related to ``organization``, its own included: its whole group
    (ancestors, descendants, and everything under a common ancestor) and every organization of the
    same legal entity (the same unified social credit code, under another kind) with its group.

    Read a step at a time, from the members found so far: their parents, their subsidiaries and
    the organizations sharing their credit codes, until no new member is found.
    """
    members: dict[Any, tuple[Any, str]] = {organization.pk: (organization.parent_id, organization.credit_code)}
    new = [organization.pk]
    while new:
        parents = {members[pk][0] for pk in new} - {None}
        codes = {members[pk][1] for pk in new}
        found = (
            Organization.objects.filter(Q(pk__in=parents) | Q(parent_id__in=new) | Q(credit_code__in=codes))
            .exclude(pk__in=list(members))
            .values_list("pk", "parent_id", "credit_code")
        )
        new = []
        for pk, parent_id, credit_code in found:
            members[pk] = (parent_id, credit_code)
            new.append(pk)
    return frozenset(members)


def taxpayer_ids(*, organization_ids: Iterable[Any]) -> dict[Any, str]:
    """Each organization's taxpayer id as its fapiao carry it: the one in its invoicing details,
    else its unified social credit code (the same number for a company registered in China)."""
    ids = set(organization_ids)
    found = dict(Organization.objects.filter(pk__in=ids).values_list("pk", "credit_code"))
    found.update(InvoicingDetails.objects.filter(organization_id__in=ids).values_list("organization_id", "taxpayer_id"))
    return found
