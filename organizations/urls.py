from django.urls import path

from organizations import apis

urlpatterns = [
    path("organizations/me/", apis.OrganizationMeApi.as_view(), name="organization-me"),
    path("api-keys/", apis.ApiKeyListCreateApi.as_view(), name="api-key-list"),
    path("api-keys/<uuid:key_id>/", apis.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("invoicing-details/", apis.InvoicingDetailsApi.as_view(), name="invoicing-details"),
    path("audit-events/", apis.AuditEventListApi.as_view(), name="audit-event-list"),
]
