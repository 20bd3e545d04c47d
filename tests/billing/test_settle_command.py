"""`manage.py settle`: month end now, or in a demo as of a later moment; never time travel in production."""

import os
import subprocess
import sys
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.management.commands.settle import Command
from billing.models import Invoice, JournalEntry, PaymentAttempt
from billing.periods import month_of
from billing.services.invoices import invoice_for_period
from billing.services.payments import payment_method_set
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from core.timezones import local_zone
from tests.billing.factories import leased, usage
from tests.billing.test_payments import GOOD_CARD, card
from tests.conftest import REPO, database_url

pytestmark = pytest.mark.django_db


def last_month() -> tuple[datetime, datetime]:
    return month_of(month_of(timezone.now())[0] - timedelta(seconds=1))


def last_months_draft(buyer, provider, *, card_on_file: bool = True) -> Invoice:  # type: ignore[no-untyped-def]
    """A draft for last month's usage (8 card-hours), with a card on file to pay it unless told."""
    month_start, _ = last_month()
    lease = leased(buyer=buyer, provider=provider, at=month_start - timedelta(days=5))
    usage(lease, month_start + timedelta(days=3, hours=4), seconds=8 * 3600)
    if card_on_file:
        payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    invoice = invoice_for_period(buyer=buyer, at=month_start)
    assert invoice.status == "draft"
    return invoice


def next_month_4th() -> tuple[str, datetime]:
    """The 4th of next month at midnight, as a newcomer types it (no offset) and as meant (in Shanghai)."""
    start = month_of(month_of(timezone.now())[1])[0].astimezone(local_zone())
    return f"{start:%Y-%m}-04T00:00", start.replace(day=4)


def settle(**options) -> str:  # type: ignore[no-untyped-def]
    out = StringIO()
    call_command("settle", stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def test_a_draft_of_last_month_is_finalized_and_paid_by_settling_as_of_a_later_moment(stripe, buyer, provider) -> None:
    # given a draft of last month and a card on file
    invoice = last_months_draft(buyer, provider)
    as_of, meant = next_month_4th()

    # when month end is run as of the 4th of next month, a time without an offset
    output = settle(as_of=as_of)

    # then the draft is finalized and paid as of that moment, read in Shanghai
    invoice.refresh_from_db()
    assert (invoice.status, invoice.number[:3]) == ("paid", "CG-")
    assert invoice.finalized_at == invoice.paid_at == meant
    assert invoice.amount_paid == invoice.amount_due == invoice.subtotal > 0
    (attempt,) = invoice.attempts.all()
    assert stripe_client().v1.payment_intents.retrieve(attempt.payment_intent_id).status == "succeeded"
    assert "1 invoice finalized; 1 payment collected: 1 succeeded, 0 failed" in output
    assert reconcile() == []


def test_settling_again_changes_nothing_the_second_time(stripe, buyer, provider) -> None:
    last_months_draft(buyer, provider)
    as_of, _ = next_month_4th()
    settle(as_of=as_of)
    books = (
        list(Invoice.objects.values_list("pk", "status", "number", "amount_paid", "paid_at")),
        JournalEntry.objects.count(),
        PaymentAttempt.objects.count(),
        len(stripe_client().v1.payment_intents.list().data),
    )

    again = settle(as_of=as_of)
    and_now = settle()

    assert "0 invoices finalized; 0 payments collected" in again
    assert "0 invoices finalized; 0 payments collected" in and_now
    assert books == (
        list(Invoice.objects.values_list("pk", "status", "number", "amount_paid", "paid_at")),
        JournalEntry.objects.count(),
        PaymentAttempt.objects.count(),
        len(stripe_client().v1.payment_intents.list().data),
    )


def test_a_buyer_without_a_card_is_reported_as_a_failed_payment_with_its_code(stripe, buyer, provider) -> None:
    invoice = last_months_draft(buyer, provider, card_on_file=False)
    as_of, _ = next_month_4th()

    output = settle(as_of=as_of)

    assert Invoice.objects.get(pk=invoice.pk).status == "finalized"
    assert "1 payment collected: 0 succeeded, 1 failed, 0 pending, 0 skipped (no_payment_method 1)" in output


def test_settling_as_of_a_later_moment_is_refused_with_production_settings() -> None:
    # given the production settings module, as deployed
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": "a-production-like-secret-key-for-this-test-only-0123456789",
        "ALLOWED_HOSTS": "grid.example.com",
        "STRIPE_API_KEY": "sk_test_production_like",
        "STRIPE_WEBHOOK_SECRET": "whsec_production_like",
        "METRICS_TOKEN": "m" * 32,
        "DEBUG": "false",
    }

    # when an operator asks for month end as of a later moment
    result = subprocess.run(
        [sys.executable, "manage.py", "settle", "--as-of", "2099-01-04T00:00"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    # then it is refused in one line, and nothing was settled
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("CommandError: --as-of is refused with these settings"), result.stderr
    assert "Traceback" not in result.stderr and "Settling" not in result.stdout


def test_as_of_is_refused_where_the_setting_is_off(settings, buyer, provider) -> None:
    settings.BILLING_AS_OF_ALLOWED = False
    invoice = invoice_for_period(buyer=buyer, at=last_month()[0])

    with pytest.raises(CommandError, match="BILLING_AS_OF_ALLOWED is off"):
        settle(as_of=next_month_4th()[0])

    assert Invoice.objects.get(pk=invoice.pk).status == "draft"


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("next tuesday", "is not an ISO 8601 date and time"),
        ("2027-13-01", "is not an ISO 8601 date and time"),
        ("2027-02-30T00:00", "is not an ISO 8601 date and time"),
        ("", "is not an ISO 8601 date and time"),
        ("2020-01-04T00:00", "is in the past"),
    ],
)
def test_a_bad_as_of_is_refused_with_a_message(buyer, as_of: str, message: str) -> None:
    invoice = invoice_for_period(buyer=buyer, at=last_month()[0])

    with pytest.raises(CommandError, match=message):
        settle(as_of=as_of)

    assert Invoice.objects.get(pk=invoice.pk).status == "draft"


def test_the_help_says_a_time_without_an_offset_is_read_in_shanghai() -> None:
    text = " ".join(Command().create_parser("manage.py", "settle").format_help().split())

    assert "a time without an offset is read in Asia/Shanghai" in text
