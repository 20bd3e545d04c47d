"""Subsidy claims on the dashboards: the claim as PDF and CSV, exactly as the API answers it."""

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone

from dashboards.access import organization_page
from dashboards.pdf import claim_pdf
from dashboards.views import Kind, page
from settlements.models import SubsidyClaim
from settlements.selectors import claim_csv, claim_evidence, claims_of
from settlements.serializers import ClaimDetailSerializer


def _claim(request: HttpRequest, slug: str, claim_id: UUID) -> SubsidyClaim:
    organization = organization_page(request, slug, Kind.ISSUER, Kind.OPERATOR)
    claim = claims_of(organization=organization, now=timezone.now()).filter(pk=claim_id).first()
    if claim is None:
        raise Http404("No such claim.")
    return claim


@page
def claim_pdf_download(request: HttpRequest, slug: str, claim_id: UUID) -> HttpResponse:
    claim = _claim(request, slug, claim_id)
    claim.evidence = claim_evidence(claim)  # type: ignore[attr-defined]
    data = {**ClaimDetailSerializer(claim).data, "issuer_name": claim.issuer.legal_name}
    return HttpResponse(
        claim_pdf(data),
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{claim.number}.pdf"'},
    )


@page
def claim_csv_download(request: HttpRequest, slug: str, claim_id: UUID) -> HttpResponse:
    """The same CSV as ``GET claims/{id}/evidence.csv``."""
    claim = _claim(request, slug, claim_id)
    return HttpResponse(
        claim_csv(claim, claim_evidence(claim)),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{claim.number}.csv"'},
    )
