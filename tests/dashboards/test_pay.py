"""The buyer's pay button: the dashboards' one write, through the service ``POST invoices/{id}/pay/`` calls."""

import re
import threading

import pytest
from django.db import connection
from django.test import Client

from billing.models import Invoice, JournalEntry, PaymentAttempt
from billing.selectors import invoice_owed
from billing.services.payments import payment_method_set
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from organizations.models import Membership
from organizations.services import member_set
from tests.billing.test_payments import DECLINED_ON_CHARGE, GOOD_CARD, card
from tests.dashboards.scenario import PASSWORD, Grid, build_grid

pytestmark = pytest.mark.django_db


@pytest.fixture
def grid() -> Grid:
    return build_grid()


def signed_in(username: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=username, password=PASSWORD)
    return client


def pay(client: Client, slug: str, invoice: Invoice, page: str) -> tuple[int, str]:
    """Open ``page``, then post its pay form for ``invoice`` as a browser would (with its CSRF token);
    the status of the post and the page it leads back to."""
    html = client.get(page).content.decode()
    form = re.search(rf'<form method="post" action="([^"]+)"[^>]*data-pay="{invoice.pk}".*?</form>', html, re.S)
    assert form is not None, "no pay button"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[0]))
    answer = client.post(form[1], fields)
    if answer.status_code != 302:
        return answer.status_code, ""
    return answer.status_code, client.get(answer["Location"]).content.decode()


def csrf_token(client: Client, page: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(page).content.decode())
    assert found is not None
    return found[1]


def message(html: str) -> tuple[str, str]:
    found = re.search(r'data-message="([a-z]+)">(.*?)</li>', html, re.S)
    assert found is not None, "no message"
    return found[1], found[2]


def test_the_overdue_invoice_is_paid_with_the_card_on_file_once_though_the_form_is_posted_twice(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))
    client = signed_in(grid.users[grid.other_buyer.slug])
    page = f"/dashboard/{grid.other_buyer.slug}/"
    owed = invoice_owed(grid.overdue)
    html = client.get(page).content.decode()
    form = re.search(rf'<form method="post" action="([^"]+)"[^>]*data-pay="{grid.overdue.pk}".*?</form>', html, re.S)
    assert form is not None and "Pay ¥" in form[0] and "now with the card on file" in form[0]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[0]))

    first = client.post(form[1], fields)
    second = client.post(form[1], fields)  # the same form, submitted again

    assert (first.status_code, first["Location"], second.status_code) == (302, page, 302)
    shown = client.get(page).content.decode()
    invoice = Invoice.objects.get(pk=grid.overdue.pk)
    assert (invoice.status, invoice.amount_paid) == ("paid", owed)
    assert PaymentAttempt.objects.filter(invoice=invoice, status="succeeded").count() == 1
    assert JournalEntry.objects.filter(reference=invoice.reference, kind="payment.stripe").count() == 1
    assert re.findall(r'data-message="([a-z]+)"', shown) == ["success", "info"]
    assert f'data-pay="{invoice.pk}"' not in shown  # nothing left to pay
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_the_form_posted_twice_at_once_charges_once(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))
    page = f"/dashboard/{grid.other_buyer.slug}/"
    clients = [signed_in(grid.users[grid.other_buyer.slug]) for _ in range(2)]
    forms = [
        re.search(rf'action="([^"]+)"[^>]*data-pay="{grid.overdue.pk}".*?</form>', c.get(page).content.decode(), re.S)
        for c in clients
    ]
    barrier, statuses = threading.Barrier(2), []

    def post(client: Client, form: re.Match[str]) -> None:
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[0]))
        barrier.wait()
        try:
            statuses.append(client.post(form[1], fields).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c, f)) for c, f in zip(clients, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    succeeded = [pi for pi in stripe_client().v1.payment_intents.list().data if pi.status == "succeeded"]
    told = [message(c.get(page).content.decode())[0] for c in clients]
    assert statuses == [302, 302] and len(succeeded) == 1
    assert JournalEntry.objects.filter(reference=grid.overdue.reference, kind="payment.stripe").count() == 1
    assert told.count("success") == 1 and set(told) - {"success"} <= {"info", "warning"}  # paid, or in flight
    assert Invoice.objects.get(pk=grid.overdue.pk).status == "paid"
    assert reconcile() == []


def test_a_declined_card_is_told_with_stripes_message_and_the_invoice_still_owes(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(DECLINED_ON_CHARGE))
    client = signed_in(grid.users[grid.other_buyer.slug])

    status, html = pay(
        client, grid.other_buyer.slug, grid.overdue, f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/"
    )

    level, text = message(html)
    attempt = PaymentAttempt.objects.get(invoice=grid.overdue, status="failed", failure_code="card_declined")
    assert (status, level) == (302, "error")
    assert "declined" in text and attempt.failure_message and attempt.failure_message in text
    invoice = Invoice.objects.get(pk=grid.overdue.pk)
    assert (invoice.status, invoice.amount_paid) == ("finalized", grid.overdue.amount_paid)


def test_without_a_card_on_file_nothing_is_charged_and_the_buyer_is_told_what_to_do(stripe, grid) -> None:
    client = signed_in(grid.users[grid.other_buyer.slug])

    status, html = pay(client, grid.other_buyer.slug, grid.overdue, f"/dashboard/{grid.other_buyer.slug}/")

    level, text = message(html)
    assert (status, level) == (302, "error")
    assert "no card on file" in text and "Stripe.js" in text and "bank transfer" in text
    assert not PaymentAttempt.objects.filter(invoice=grid.overdue, number__gt=grid.overdue.payment_attempts).exists()
    assert Invoice.objects.get(pk=grid.overdue.pk).payment_attempts == grid.overdue.payment_attempts


def test_another_tenants_invoice_answers_404_and_is_not_charged(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))
    client = signed_in(grid.users[grid.buyer.slug])
    token = csrf_token(client, f"/dashboard/{grid.buyer.slug}/")
    fields = {"csrfmiddlewaretoken": token, "amount": invoice_owed(grid.overdue)}

    under_mine = client.post(f"/dashboard/{grid.buyer.slug}/invoices/{grid.overdue.pk}/pay/", fields)
    under_theirs = client.post(f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/pay/", fields)

    assert (under_mine.status_code, under_theirs.status_code) == (404, 404)
    assert Invoice.objects.get(pk=grid.overdue.pk).status == "finalized"
    assert not PaymentAttempt.objects.filter(invoice=grid.overdue, status="succeeded").exists()


def test_a_member_of_the_provider_cannot_pay_the_buyers_invoice(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))
    client = signed_in(grid.users[grid.provider.slug])
    token = csrf_token(client, f"/dashboard/{grid.provider.slug}/")
    fields = {"csrfmiddlewaretoken": token, "amount": invoice_owed(grid.overdue)}

    answers = [
        client.post(f"/dashboard/{slug}/invoices/{grid.overdue.pk}/pay/", fields).status_code
        for slug in (grid.provider.slug, grid.other_buyer.slug)
    ]

    assert answers == [404, 404]
    assert Invoice.objects.get(pk=grid.overdue.pk).status == "finalized"


def test_a_post_without_the_csrf_token_is_refused(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))
    client = signed_in(grid.users[grid.other_buyer.slug])
    csrf_token(client, f"/dashboard/{grid.other_buyer.slug}/")  # the page sets the CSRF cookie

    answer = client.post(
        f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/pay/", {"amount": invoice_owed(grid.overdue)}
    )

    assert answer.status_code == 403
    assert Invoice.objects.get(pk=grid.overdue.pk).status == "finalized"


def test_an_invoice_with_nothing_to_pay_gets_a_message_and_no_charge(stripe, grid) -> None:
    payment_method_set(organization=grid.buyer, payment_method=card(GOOD_CARD))
    draft = Invoice.objects.get(buyer=grid.buyer, status="draft")
    client = signed_in(grid.users[grid.buyer.slug])
    token = csrf_token(client, f"/dashboard/{grid.buyer.slug}/")

    answer = client.post(
        f"/dashboard/{grid.buyer.slug}/invoices/{draft.pk}/pay/", {"csrfmiddlewaretoken": token, "amount": "1"}
    )

    level, text = message(client.get(answer["Location"]).content.decode())
    assert (answer.status_code, level) == (302, "error")
    assert "draft invoice has nothing to pay" in text and "Nothing was charged" in text
    assert not PaymentAttempt.objects.filter(invoice=draft).exists()


def test_a_stale_amount_charges_nothing(stripe, grid) -> None:
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))
    client = signed_in(grid.users[grid.other_buyer.slug])
    token = csrf_token(client, f"/dashboard/{grid.other_buyer.slug}/")

    answer = client.post(
        f"/dashboard/{grid.other_buyer.slug}/invoices/{grid.overdue.pk}/pay/",
        {"csrfmiddlewaretoken": token, "amount": str(invoice_owed(grid.overdue) + 1)},
    )

    level, text = message(client.get(answer["Location"]).content.decode())
    assert level == "error" and "nothing was charged" in text
    assert Invoice.objects.get(pk=grid.overdue.pk).status == "finalized"


def test_an_admin_member_may_pay_like_any_member(stripe, grid) -> None:
    member_set(organization=grid.other_buyer, username="their-admin", password=PASSWORD, role=Membership.Role.ADMIN)
    payment_method_set(organization=grid.other_buyer, payment_method=card(GOOD_CARD))

    status, html = pay(
        signed_in("their-admin"), grid.other_buyer.slug, grid.overdue, f"/dashboard/{grid.other_buyer.slug}/"
    )

    assert (status, message(html)[0]) == (302, "success")
    assert Invoice.objects.get(pk=grid.overdue.pk).status == "paid"
