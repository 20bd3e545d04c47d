"""Which language a request is answered in: English or Simplified Chinese (settings.LANGUAGES).

A signed-in member reads the dashboards in the language they chose (``MemberProfile``), else in
their organization's default: Chinese for an organization registered in a mainland province
(``settings.DEFAULT_LANGUAGE_IN_MAINLAND``), English elsewhere. Without a member (the sign-in
page, the API's keys) the request's ``Accept-Language`` decides, else English. Error ``code``s
never change with the language; only messages are translated.
"""

from django.conf import settings
from django.http import HttpRequest

from core.languages import api_language
from organizations.models import MemberProfile, Membership, Organization

# The 31 province-level divisions of mainland China, as Organization.province names them
# (Hong Kong, Macao and Taiwan are not among them).
MAINLAND_PROVINCES = frozenset(
    {
        "Anhui", "Beijing", "Chongqing", "Fujian", "Gansu", "Guangdong", "Guangxi", "Guizhou", "Hainan",
        "Hebei", "Heilongjiang", "Henan", "Hubei", "Hunan", "Inner Mongolia", "Jiangsu", "Jiangxi", "Jilin",
        "Liaoning", "Ningxia", "Qinghai", "Shaanxi", "Shandong", "Shanghai", "Shanxi", "Sichuan", "Tianjin",
        "Tibet", "Xinjiang", "Yunnan", "Zhejiang",
    }
)  # fmt: skip


def organization_language(organization: Organization) -> str:
    """The organization's default language: Chinese in a mainland province, else English."""
    if organization.province in MAINLAND_PROVINCES:
        return str(settings.DEFAULT_LANGUAGE_IN_MAINLAND)
    return str(settings.LANGUAGE_CODE)


def member_language(user_id: int) -> str:
    """The member's own choice, else the default of their first organization (by joining)."""
    chosen = MemberProfile.objects.filter(user_id=user_id).values_list("language", flat=True).first()
    if chosen:
        return chosen
    membership = (
        Membership.objects.filter(user_id=user_id).select_related("organization").order_by("created_at", "pk").first()
    )
    return organization_language(membership.organization) if membership else str(settings.LANGUAGE_CODE)


def request_language(request: HttpRequest) -> str:
    """A signed-in member's language on the dashboards; ``Accept-Language`` on the API and the
    sign-in page. The API's answers never read the session: they do not vary by ``Cookie``."""
    if request.path.startswith("/api/"):
        return api_language(request)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return member_language(user.pk)
    return api_language(request)
