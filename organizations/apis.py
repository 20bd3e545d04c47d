from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from organizations.models import ApiKey
from organizations.permissions import KeyRoleAllows, organization_of, scoped
from organizations.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    OrganizationSerializer,
)
from organizations.services import api_key_create, api_key_revoke


class OrganizationMeApi(APIView):
    @extend_schema(responses=OrganizationSerializer, summary="The organization of the calling key")
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(organization_of(request)).data)


class ApiKeyListCreateApi(ListAPIView):
    """Your organization's API keys. Creating and revoking needs an admin key."""

    serializer_class = ApiKeySerializer
    permission_classes = [KeyRoleAllows]

    @property
    def admin_key_only(self) -> bool:
        return self.request.method == "POST"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if getattr(self, "swagger_fake_view", False):
            return ApiKey.objects.none()
        return scoped(ApiKey.objects.all(), self.request)

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
        summary="Create an API key; the key is shown once",
    )
    def post(self, request: Request) -> Response:
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, raw_key = api_key_create(
            organization=organization_of(request),
            created_by=f"api-key:{request.user.api_key.prefix}",  # type: ignore[union-attr]
            **serializer.validated_data,
        )
        api_key.key = raw_key  # type: ignore[attr-defined]
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    admin_key_only = True

    @extend_schema(responses={204: None}, summary="Revoke an API key")
    def delete(self, request: Request, key_id: str) -> Response:
        api_key_revoke(organization=organization_of(request), key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
