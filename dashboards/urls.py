from django.contrib.auth import views as auth_views
from django.urls import path

from dashboards import payments, settlements, views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="dashboard-login"),
    path("logout/", auth_views.LogoutView.as_view(), name="dashboard-logout"),
    path("", views.home, name="dashboard-home"),
    path("language/", views.LanguageChoice.as_view(), name="dashboard-language"),
    path("<slug:slug>/", views.dashboard, name="dashboard"),
    path("<slug:slug>/programs/<uuid:program_id>/", views.program, name="dashboard-program"),
    path("<slug:slug>/programs/<uuid:program_id>/report.csv", views.program_csv, name="dashboard-program-csv"),
    path("<slug:slug>/invoices/<uuid:invoice_id>/", views.invoice, name="dashboard-invoice"),
    path("<slug:slug>/invoices/<uuid:invoice_id>/pay/", payments.InvoicePay.as_view(), name="dashboard-invoice-pay"),
    path("<slug:slug>/invoices/<uuid:invoice_id>/pdf/", views.invoice_pdf_download, name="dashboard-invoice-pdf"),
    path("<slug:slug>/claims/<uuid:claim_id>/pdf/", settlements.claim_pdf_download, name="dashboard-claim-pdf"),
    path("<slug:slug>/claims/<uuid:claim_id>/claim.csv", settlements.claim_csv_download, name="dashboard-claim-csv"),
]
