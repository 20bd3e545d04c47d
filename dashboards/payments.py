"""The dashboards' one write: a buyer pays an invoice with the card on file.

It calls the service ``POST invoices/{id}/pay/`` calls (``billing.services.payments.invoice_pay``),
whose collection lock and pending attempt keep a form posted twice from charging twice: the second
post finds the invoice paid, or the first still talking to Stripe. The form carries the amount its
button showed; if the invoice owes another amount by then, nothing is charged.
"""

from uuid import UUID

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views import View

from billing.models import Invoice, PaymentAttempt
from billing.selectors import invoice_list, invoice_owed
from billing.services.payments import invoice_pay
from core.exceptions import ApplicationError
from dashboards.access import invoice_payer
from dashboards.formatting import money
from dashboards.views import page


class InvoicePay(View):
    """POST only: the form on the buyer's page and on the invoice page."""

    @method_decorator(page)
    def post(self, request: HttpRequest, slug: str, invoice_id: UUID) -> HttpResponseRedirect:
        organization = invoice_payer(request, slug)
        invoice = invoice_list(organization=organization).filter(pk=invoice_id).select_related("buyer").first()
        if invoice is None:
            raise Http404("No such invoice.")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=False):
            back = reverse("dashboard-invoice", args=[slug, invoice.pk])
        _pay(request, invoice)
        return redirect(back)


def _pay(request: HttpRequest, invoice: Invoice) -> None:
    owed = invoice_owed(invoice)
    if owed and request.POST.get("amount") != str(owed):
        messages.error(
            request,
            _("Invoice %(number)s now owes %(owed)s; nothing was charged. Check the amount and pay again.")
            % {"number": invoice.number, "owed": money(owed)},
        )
        return
    try:
        attempt = invoice_pay(invoice=invoice, payment_method=None)
    except ApplicationError as error:
        if error.code == "no_payment_method":
            messages.error(request, _no_card_message(invoice))
        elif invoice.status == Invoice.Status.PAID:
            messages.info(request, _paid_message(invoice))
        else:
            messages.error(request, _("%(refusal)s Nothing was charged.") % {"refusal": error.message})
        return
    if attempt is None and not invoice_owed(Invoice.objects.get(pk=invoice.pk)):
        messages.info(request, _paid_message(invoice))
    elif attempt is None or attempt.status == PaymentAttempt.Status.PENDING:
        messages.warning(
            request,
            _("A card payment of invoice %(number)s is in flight; nothing more was charged. Look again in a minute.")
            % {"number": invoice.number},
        )
    elif attempt.status == PaymentAttempt.Status.SUCCEEDED:
        messages.success(
            request,
            _("Invoice %(number)s is paid: %(amount)s charged to the card on file.")
            % {"number": invoice.number, "amount": money(attempt.amount)},
        )
    else:
        reason = attempt.failure_message or attempt.failure_code
        messages.error(
            request,
            _("The card on file was declined: %(reason)s Invoice %(number)s still owes %(owed)s.")
            % {"reason": reason, "number": invoice.number, "owed": money(owed)},
        )


def _no_card_message(invoice: Invoice) -> str:
    return _(
        "There is no card on file; nothing was charged. Add one through the API (a Stripe PaymentMethod made "
        "with Stripe.js, sent as payment_method to POST /api/v1/invoices/%(id)s/pay/), or pay by bank transfer "
        "with the details on invoice %(number)s."
    ) % {"id": invoice.pk, "number": invoice.number}


def _paid_message(invoice: Invoice) -> str:
    return _("Invoice %(number)s is paid; nothing more was charged.") % {"number": invoice.number}
