from django.urls import path

from billing import apis

urlpatterns = [
    path("usage-events/", apis.UsageEventsApi.as_view(), name="usage-events"),
    path("usage/", apis.UsageApi.as_view(), name="usage"),
]
