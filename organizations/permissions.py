"""Who may do what: by kind of organization, and by the role of the key."""

from typing import Any

from django.db.models import QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from organizations.models import ApiKey, Organization


def kind_of(request: Request) -> str | None:
    return getattr(request.user, "kind", None)


def organization_of(request: Request) -> Organization:
    return request.user.organization  # type: ignore[union-attr]


class _KindPermission(BasePermission):
    kinds: frozenset[str] = frozenset()
    message = "Your kind of organization may not do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return kind_of(request) in self.kinds


def allow_kinds(*kinds: str) -> type[BasePermission]:
    """A permission class admitting only these kinds of organization (403 otherwise)."""
    names = ", ".join(sorted(kinds))
    return type(
        f"Allow_{'_'.join(sorted(kinds))}",
        (_KindPermission,),
        {"kinds": frozenset(kinds), "message": f"Only organizations of kind {names} may do this."},
    )


IsBuyer = allow_kinds(Organization.Kind.BUYER)
IsProvider = allow_kinds(Organization.Kind.PROVIDER)
IsOperator = allow_kinds(Organization.Kind.OPERATOR)


class KeyRoleAllows(BasePermission):
    """Read-only keys only read; only admin keys manage keys (views say so with ``admin_only``)."""

    message = "This API key's role does not allow this request."

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = getattr(request.user, "api_key", None)
        if api_key is None:
            return False
        if getattr(view, "admin_key_only", False):
            return api_key.role == ApiKey.Role.ADMIN
        return request.method in SAFE_METHODS or api_key.role != ApiKey.Role.READ_ONLY


def scoped(queryset: QuerySet[Any], request: Request, field: str = "organization") -> QuerySet[Any]:
    """Only the rows of the caller's organization: every list and lookup goes through here."""
    return queryset.filter(**{field: organization_of(request)})
