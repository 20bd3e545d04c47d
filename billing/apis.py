from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.cloudevents import BATCH, MAX_BYTES, STRUCTURED, events_from_request, too_large_message
from billing.selectors import usage_series
from billing.serializers import (
    CloudEventSerializer,
    IngestResultSerializer,
    UsageQuerySerializer,
    UsageRowSerializer,
)
from billing.services.usage import usage_events_ingest
from core.exceptions import PayloadTooLarge
from organizations.models import Organization
from organizations.permissions import IsProvider, KeyRoleAllows, allow_kinds, organization_of


class UsageEventsApi(APIView):
    """Provider agents report usage as CloudEvents 1.0.

    One event (`application/cloudevents+json`, or binary mode with `ce-*` headers), a batch
    (`application/cloudevents-batch+json`) or a plain JSON array: at most 10,000 events and 10 MB.
    Types `compute.gpu_seconds` (`data.quantity` card-seconds, optional `data.cards`) and
    `compute.tokens` (`data.model`, `data.input_tokens`, `data.output_tokens`); `subject` is the
    lease id; `time` is when the usage happened. `source` + `id` identify an event forever:
    sending it again is a duplicate, not an error; the same key with other content is a conflict.
    Each bad event is rejected on its own with a code; the rest of the batch is kept.
    """

    permission_classes = [KeyRoleAllows, IsProvider]

    @extend_schema(
        request={
            BATCH: CloudEventSerializer(many=True),
            STRUCTURED: CloudEventSerializer,
            "application/json": CloudEventSerializer(many=True),
        },
        responses=IngestResultSerializer,
        summary="Report usage events",
        examples=[
            OpenApiExample(
                "A card-seconds event",
                value=[
                    {
                        "specversion": "1.0",
                        "id": "evt-000001",
                        "source": "agent://west-cloud/pool-7",
                        "type": "compute.gpu_seconds",
                        "subject": "7f4c3f2e-0000-4000-8000-000000000001",
                        "time": "2026-03-01T08:00:00Z",
                        "data": {"quantity": 480, "cards": 8},
                    }
                ],
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_BYTES:
            raise PayloadTooLarge(too_large_message(), code="payload_too_large")
        events = events_from_request(request.content_type or "", request.headers, request.body)
        result = usage_events_ingest(provider_id=organization_of(request).pk, events=events)
        return Response(IngestResultSerializer(result).data)


class UsageApi(APIView):
    """Rolled-up usage: buyers see their leases, providers their pools."""

    permission_classes = [KeyRoleAllows, allow_kinds(Organization.Kind.BUYER, Organization.Kind.PROVIDER)]

    @extend_schema(parameters=[UsageQuerySerializer], responses=UsageRowSerializer(many=True), summary="Usage")
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = usage_series(organization=organization_of(request), **query.validated_data)
        return Response(UsageRowSerializer(rows, many=True).data)
