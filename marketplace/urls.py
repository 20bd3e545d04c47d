from django.urls import path

from marketplace import apis

urlpatterns = [
    path("offers/", apis.OfferListApi.as_view(), name="offer-list"),
    path("quotes/", apis.QuoteApi.as_view(), name="quote"),
    path("orders/", apis.OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<uuid:order_id>/", apis.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<uuid:order_id>/cancel/", apis.OrderCancelApi.as_view(), name="order-cancel"),
    path("leases/", apis.LeaseListApi.as_view(), name="lease-list"),
    path("leases/<uuid:lease_id>/", apis.LeaseDetailApi.as_view(), name="lease-detail"),
    path("leases/<uuid:lease_id>/start/", apis.LeaseStartApi.as_view(), name="lease-start"),
    path("feed/", apis.FeedApi.as_view(), name="feed"),
    path("price-index/", apis.PriceIndexApi.as_view(), name="price-index"),
    path("leases/<uuid:lease_id>/terminate/", apis.LeaseTerminateApi.as_view(), name="lease-terminate"),
]
