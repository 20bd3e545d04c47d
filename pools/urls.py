from django.urls import path

from pools import apis, endpoint_apis

urlpatterns = [
    path("hubs/", apis.HubListApi.as_view(), name="hub-list"),
    path("gpu-models/", apis.GpuModelListApi.as_view(), name="gpu-model-list"),
    path("pools/", apis.PoolListCreateApi.as_view(), name="pool-list"),
    path("pools/<uuid:pool_id>/", apis.PoolDetailApi.as_view(), name="pool-detail"),
    path("pools/<uuid:pool_id>/approve/", apis.PoolApproveApi.as_view(), name="pool-approve"),
    path("pools/<uuid:pool_id>/suspend/", apis.PoolSuspendApi.as_view(), name="pool-suspend"),
    path("pools/<uuid:pool_id>/retire/", apis.PoolRetireApi.as_view(), name="pool-retire"),
    path("pools/<uuid:pool_id>/heartbeat/", apis.PoolHeartbeatApi.as_view(), name="pool-heartbeat"),
    path("pools/<uuid:pool_id>/prices/", apis.PoolPriceListApi.as_view(), name="pool-prices"),
    path("endpoints/", endpoint_apis.EndpointListCreateApi.as_view(), name="endpoint-list"),
    path("endpoints/<uuid:endpoint_id>/", endpoint_apis.EndpointDetailApi.as_view(), name="endpoint-detail"),
    path("endpoints/<uuid:endpoint_id>/approve/", endpoint_apis.EndpointApproveApi.as_view(), name="endpoint-approve"),
    path("endpoints/<uuid:endpoint_id>/suspend/", endpoint_apis.EndpointSuspendApi.as_view(), name="endpoint-suspend"),
    path("endpoints/<uuid:endpoint_id>/retire/", endpoint_apis.EndpointRetireApi.as_view(), name="endpoint-retire"),
]
