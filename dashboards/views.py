"""The dashboards: thin views that check membership, then render what ``pages`` builds."""

from collections.abc import Callable
from functools import wraps
from typing import Any, cast
from uuid import UUID

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from billing.selectors import invoice_list
from core.exceptions import RateLimited
from core.throttling import auth_failures_check
from core.timezones import local_zone
from dashboards import pages
from dashboards.access import member_organizations, organization_page
from dashboards.invoices import invoice_document
from dashboards.pdf import invoice_pdf
from dashboards.price_index import price_index_panel
from organizations.models import MemberProfile, Organization
from organizations.services import member_language_set
from vouchers.models import VoucherProgram
from vouchers.report_csv import report_csv
from vouchers.selectors import program_list, program_report, redemption_trail

Kind = Organization.Kind


class LoginView(auth_views.LoginView):
    """Django's sign-in page. Failed sign-ins count per client address (the authentication
    backend, organizations.authentication.SignInBackend); past the limit the address gets a 429
    page, with Retry-After, until the window ends."""

    template_name = "dashboards/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            auth_failures_check(request)
        except RateLimited as limited:
            context = self.get_context_data(form=self.get_form_class()(request), locked_out=limited.message)
            return self.render_to_response(context, status=429, headers=limited.headers)
        return super().post(request, *args, **kwargs)


def page(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A page for signed-in people, its dates and times shown in the billing time zone."""

    @login_required
    @wraps(view)
    def shown_in_billing_time(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        with timezone.override(local_zone()):
            return view(request, *args, **kwargs)

    return shown_in_billing_time


@page
def home(request: HttpRequest) -> HttpResponse:
    """Straight to the user's organization; a choice when they belong to several."""
    organizations = member_organizations(request)
    if len(organizations) == 1:
        return redirect("dashboard", slug=organizations[0].slug)
    return render(request, "dashboards/home.html", {"organizations": organizations})


@page
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    organization = organization_page(request, slug)
    now = timezone.now()
    context: dict[str, Any] = {"organization": organization, "now": now}
    if organization.kind == Kind.OPERATOR:
        context.update(pages.operator_page(organization=organization, now=now, params=request.GET))
    elif organization.kind == Kind.ISSUER:
        context.update(pages.issuer_page(organization=organization))
    elif organization.kind == Kind.BUYER:
        context.update(pages.buyer_page(organization=organization, now=now))
    else:
        context.update(pages.provider_page(organization=organization, now=now))
    context.update(price_index_panel(organization=organization, now=now))
    return render(request, f"dashboards/{organization.kind}.html", context)


class LanguageChoice(View):
    """POST only: the header's language form. The signed-in member chooses the dashboards' language
    (blank: their organization's default), then goes back to the page they were on."""

    @method_decorator(page)
    def post(self, request: HttpRequest) -> HttpResponse:
        chosen = request.POST.get("language", "")
        if chosen not in MemberProfile.Language.values:
            return HttpResponse(status=400)
        member_language_set(user_id=cast(int, request.user.pk), language=chosen)
        back = request.POST.get("next", "")
        safe = url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        return redirect(back if safe else "dashboard-home")


def _program(organization: Organization, program_id: UUID) -> VoucherProgram:
    program = program_list(organization=organization).filter(pk=program_id).first()
    if program is None:
        raise Http404("No such voucher program.")
    return program


@page
def program(request: HttpRequest, slug: str, program_id: UUID) -> HttpResponse:
    organization = organization_page(request, slug, Kind.ISSUER, Kind.OPERATOR)
    now = timezone.now()
    context = pages.program_page(program=_program(organization, program_id), now=now)
    return render(request, "dashboards/program.html", {"organization": organization, "now": now, **context})


@page
def program_csv(request: HttpRequest, slug: str, program_id: UUID) -> StreamingHttpResponse:
    """The same CSV as ``GET voucher-programs/{id}/report/?format=csv``."""
    found = _program(organization_page(request, slug, Kind.ISSUER, Kind.OPERATOR), program_id)
    trail = redemption_trail(program=found).iterator(chunk_size=2000)
    return StreamingHttpResponse(
        report_csv(program_report(program=found), trail),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="voucher-program-{found.pk}.csv"'},
    )


def _invoice_data(request: HttpRequest, slug: str, invoice_id: UUID) -> tuple[Organization, dict[str, Any]]:
    """The invoice exactly as ``GET invoices/{id}/`` answers it, as a finance document."""
    organization = organization_page(request, slug, Kind.BUYER, Kind.OPERATOR)
    found = (
        invoice_list(organization=organization)
        .filter(pk=invoice_id)
        .select_related("buyer")
        .prefetch_related("lines")
        .first()
    )
    if found is None:
        raise Http404("No such invoice.")
    return organization, invoice_document(found, now=timezone.now())


@page
def invoice(request: HttpRequest, slug: str, invoice_id: UUID) -> HttpResponse:
    """The invoice's print view."""
    organization, data = _invoice_data(request, slug, invoice_id)
    return render(request, "dashboards/invoice.html", {"organization": organization, "invoice": data})


@page
def invoice_pdf_download(request: HttpRequest, slug: str, invoice_id: UUID) -> HttpResponse:
    _, data = _invoice_data(request, slug, invoice_id)
    name = data["number"] or f"draft-{data['period_start'][:7]}"
    return HttpResponse(
        invoice_pdf(data),
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="invoice-{name}.pdf"'},
    )
