from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny

from pools.models import GpuModel, Hub
from pools.serializers import GpuModelSerializer, HubSerializer


class HubListApi(ListAPIView):
    """The 8 national hubs: region, electricity tariff, PUE, green share, latency to user regions."""

    queryset = Hub.objects.all()
    serializer_class = HubSerializer
    permission_classes = [AllowAny]
    authentication_classes: list[type] = []
    filterset_fields = ["region"]


class GpuModelListApi(ListAPIView):
    """The GPU model catalog."""

    queryset = GpuModel.objects.all()
    serializer_class = GpuModelSerializer
    permission_classes = [AllowAny]
    authentication_classes: list[type] = []
    filterset_fields = ["vendor"]
