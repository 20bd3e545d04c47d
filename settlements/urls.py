from django.urls import path

from settlements import apis

urlpatterns = [
    path("payout-account/", apis.PayoutAccountApi.as_view(), name="payout-account"),
    path("payouts/", apis.PayoutListApi.as_view(), name="payout-list"),
    path("payout-runs/", apis.PayoutRunListApi.as_view(), name="payout-run-list"),
    path("payout-runs/<uuid:run_id>/", apis.PayoutRunDetailApi.as_view(), name="payout-run-detail"),
    path("payout-runs/<uuid:run_id>/batch.csv", apis.PayoutBatchApi.as_view(), name="payout-run-batch"),
    path("payout-runs/<uuid:run_id>/send/", apis.PayoutRunSendApi.as_view(), name="payout-run-send"),
    path("payout-runs/<uuid:run_id>/return-file/", apis.PayoutReturnFileApi.as_view(), name="payout-run-return"),
    path(
        "payout-runs/<uuid:run_id>/lines/<uuid:line_id>/settle/",
        apis.PayoutLineSettleApi.as_view(),
        name="payout-line-settle",
    ),
    path("claims/", apis.ClaimListApi.as_view(), name="claim-list"),
    path("claims/<uuid:claim_id>/", apis.ClaimDetailApi.as_view(), name="claim-detail"),
    path("claims/<uuid:claim_id>/evidence.csv", apis.ClaimCsvApi.as_view(), name="claim-csv"),
    path("claims/<uuid:claim_id>/review/", apis.ClaimReviewApi.as_view(), name="claim-review"),
    path("claims/<uuid:claim_id>/payments/", apis.ClaimPaymentApi.as_view(), name="claim-payments"),
]
