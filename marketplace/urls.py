from django.urls import path

from marketplace import apis

urlpatterns = [
    path("offers/", apis.OfferListApi.as_view(), name="offer-list"),
]
