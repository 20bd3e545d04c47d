"""Who may open which dashboard: members of an organization, each only their own."""

from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from organizations.models import Organization


def _of_member(request: HttpRequest) -> QuerySet[Organization]:
    """Active organizations the signed-in user is a member of (views require a login)."""
    return Organization.objects.filter(memberships__user_id=request.user.pk or 0, is_active=True)


def member_organizations(request: HttpRequest) -> list[Organization]:
    return list(_of_member(request).order_by("legal_name", "slug"))


def organization_page(request: HttpRequest, slug: str, *kinds: str) -> Organization:
    """The organization ``slug`` if the user is one of its members (and it is of one of ``kinds``);
    404 otherwise, like the API, so that other organizations' pages cannot be probed."""
    organization = _of_member(request).filter(slug=slug).first()
    if organization is None or (kinds and organization.kind not in kinds):
        raise Http404("No such page.")
    return organization
