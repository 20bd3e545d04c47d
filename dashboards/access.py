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


def invoice_payer(request: HttpRequest, slug: str) -> Organization:
    """The buyer ``slug`` if the user may pay its invoices; 404 otherwise. The API's
    ``POST invoices/{id}/pay/`` admits a buyer's keys of every role but read-only
    (organizations.permissions.KeyRoleAllows); a membership is admin or member, never read-only,
    so every member of the buyer may pay, and nobody else."""
    return organization_page(request, slug, Organization.Kind.BUYER)
