from django.urls import path

from orbit import apis

urlpatterns = [
    path("pools/<uuid:pool_id>/contacts/", apis.PoolContactsApi.as_view(), name="pool-contacts"),
    path("datasets/", apis.DatasetListCreateApi.as_view(), name="dataset-list"),
    path("datasets/<uuid:dataset_id>/", apis.DatasetDetailApi.as_view(), name="dataset-detail"),
]
