from django.urls import path

from vouchers import apis

urlpatterns = [
    path("voucher-programs/", apis.ProgramListCreateApi.as_view(), name="voucher-program-list"),
    path("voucher-programs/<uuid:program_id>/", apis.ProgramDetailApi.as_view(), name="voucher-program-detail"),
    path("voucher-programs/<uuid:program_id>/open/", apis.ProgramOpenApi.as_view(), name="voucher-program-open"),
    path("voucher-programs/<uuid:program_id>/close/", apis.ProgramCloseApi.as_view(), name="voucher-program-close"),
    path("voucher-programs/<uuid:program_id>/report/", apis.ProgramReportApi.as_view(), name="voucher-program-report"),
    path(
        "voucher-programs/<uuid:program_id>/vouchers/",
        apis.ProgramVouchersApi.as_view(),
        name="voucher-program-vouchers",
    ),
    path("vouchers/", apis.VoucherListApi.as_view(), name="voucher-list"),
    path("vouchers/<uuid:voucher_id>/", apis.VoucherDetailApi.as_view(), name="voucher-detail"),
    path("vouchers/<uuid:voucher_id>/revoke/", apis.VoucherRevokeApi.as_view(), name="voucher-revoke"),
]
