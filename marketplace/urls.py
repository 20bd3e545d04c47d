from django.urls import path

from marketplace import apis, token_apis

urlpatterns = [
    path("offers/", apis.OfferListApi.as_view(), name="offer-list"),
    path("quotes/", apis.QuoteApi.as_view(), name="quote"),
    path("orders/", apis.OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<uuid:order_id>/", apis.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<uuid:order_id>/cancel/", apis.OrderCancelApi.as_view(), name="order-cancel"),
    path("leases/", apis.LeaseListApi.as_view(), name="lease-list"),
    path("leases/<uuid:lease_id>/", apis.LeaseDetailApi.as_view(), name="lease-detail"),
    path("leases/<uuid:lease_id>/deposits/", apis.LeaseDepositsApi.as_view(), name="lease-deposits"),
    path("leases/<uuid:lease_id>/start/", apis.LeaseStartApi.as_view(), name="lease-start"),
    path("feed/", apis.FeedApi.as_view(), name="feed"),
    path("price-index/", apis.PriceIndexApi.as_view(), name="price-index"),
    path("leases/<uuid:lease_id>/terminate/", apis.LeaseTerminateApi.as_view(), name="lease-terminate"),
    path("token-offers/", token_apis.TokenOfferListApi.as_view(), name="token-offer-list"),
    path("token-quotes/", token_apis.TokenQuoteApi.as_view(), name="token-quote"),
    path("token-orders/", token_apis.TokenOrderListCreateApi.as_view(), name="token-order-list"),
    path("token-orders/<uuid:token_order_id>/", token_apis.TokenOrderDetailApi.as_view(), name="token-order-detail"),
]
