from django.urls import path

from billing import apis

urlpatterns = [
    path("usage-events/", apis.UsageEventsApi.as_view(), name="usage-events"),
    path("usage/", apis.UsageApi.as_view(), name="usage"),
    path("invoices/", apis.InvoiceListApi.as_view(), name="invoice-list"),
    path("invoices/<uuid:invoice_id>/", apis.InvoiceDetailApi.as_view(), name="invoice-detail"),
    path("invoices/<uuid:invoice_id>/pay/", apis.InvoicePayApi.as_view(), name="invoice-pay"),
    path("invoices/<uuid:invoice_id>/void/", apis.InvoiceVoidApi.as_view(), name="invoice-void"),
    path(
        "invoices/<uuid:invoice_id>/bank-transfer/", apis.InvoiceBankTransferApi.as_view(), name="invoice-bank-transfer"
    ),
    path("invoices/<uuid:invoice_id>/fapiao/", apis.InvoiceFapiaoApi.as_view(), name="invoice-fapiao"),
    path("fapiao-requests/", apis.FapiaoRequestListApi.as_view(), name="fapiao-request-list"),
    path("fapiao-requests/<uuid:request_id>/", apis.FapiaoRequestDetailApi.as_view(), name="fapiao-request-detail"),
    path("fapiao-requests/<uuid:request_id>/issue/", apis.FapiaoIssueApi.as_view(), name="fapiao-request-issue"),
    path("fapiao-requests/<uuid:request_id>/red-letter/", apis.FapiaoRedLetterApi.as_view(), name="fapiao-red-letter"),
    path("fapiao-requests/<uuid:request_id>/file/", apis.FapiaoFileApi.as_view(), name="fapiao-request-file"),
    path("statements/", apis.StatementListApi.as_view(), name="statement-list"),
    path("bank/", apis.BankApi.as_view(), name="bank"),
    path("bank/transactions/", apis.BankTransactionListApi.as_view(), name="bank-transactions"),
    path("bank/top-ups/", apis.TopUpCreateApi.as_view(), name="bank-top-ups"),
    path("bank/top-ups/<uuid:top_up_id>/", apis.TopUpDetailApi.as_view(), name="bank-top-up-detail"),
    path("bank/deposits/", apis.BankDepositListApi.as_view(), name="bank-deposits"),
    path(
        "bank/deposits/<uuid:deposit_id>/withdraw/", apis.BankDepositWithdrawApi.as_view(), name="bank-deposit-withdraw"
    ),
    path("webhooks/stripe/", apis.StripeWebhookApi.as_view(), name="stripe-webhook"),
]
