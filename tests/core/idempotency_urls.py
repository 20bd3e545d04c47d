"""A small endpoint that creates a row, to exercise ``@idempotent`` on its own."""

from django.urls import path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import RuleViolation
from core.idempotency import idempotent
from core.serializers import StrictSerializer
from organizations.services import organization_create
from tests.factories import _credit_code


class _Body(StrictSerializer):
    slug = serializers.SlugField()
    refuse = serializers.BooleanField(default=False)


class CreateOrganizationApi(APIView):
    counter = 10_000

    @idempotent
    def post(self, request: Request) -> Response:
        body = _Body(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data["refuse"]:
            raise RuleViolation("refused on request", code="refused")
        CreateOrganizationApi.counter += 1
        organization = organization_create(
            kind="buyer",
            slug=body.validated_data["slug"],
            legal_name="Idempotent Co.",
            credit_code=_credit_code(CreateOrganizationApi.counter),
            province="Beijing",
        )
        return Response({"id": str(organization.pk), "slug": organization.slug}, status=201)


urlpatterns = [path("things/", CreateOrganizationApi.as_view())]
