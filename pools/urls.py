from django.urls import path

from pools import apis

urlpatterns = [
    path("hubs/", apis.HubListApi.as_view(), name="hub-list"),
    path("gpu-models/", apis.GpuModelListApi.as_view(), name="gpu-model-list"),
]
