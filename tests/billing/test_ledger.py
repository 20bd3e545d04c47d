import time
from functools import partial

import pytest
from django.db import IntegrityError, connection, transaction

from billing.models import Account, JournalEntry, Leg
from billing.services.ledger import Purpose, account_balance, account_for, accounts_for, entry_post, entry_reverse
from tests.factories import ProviderFactory
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db


@pytest.fixture
def accounts(buyer):  # type: ignore[no-untyped-def]
    return account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer), account_for(
        purpose=Purpose.PLATFORM_REVENUE
    )


def immediate() -> None:
    """Check the deferred constraint triggers now instead of at commit."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_a_balanced_entry_is_posted_and_moves_both_balances(accounts) -> None:
    receivable, revenue = accounts

    entry_post(kind="test", description="t", reference="r", legs=[(receivable, 1500), (revenue, -1500)])
    immediate()

    assert (account_balance(receivable), account_balance(revenue)) == (1500, -1500)


def test_the_database_refuses_an_unbalanced_entry_written_through_raw_sql(accounts) -> None:
    receivable, revenue = accounts

    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        entry = JournalEntry.objects.create(
            kind="raw", description="raw", reference="raw", posted_at="2026-03-01T00:00Z"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO billing_leg (entry_id, account_id, amount, currency) VALUES (%s, %s, 100, 'CNY'),"
                " (%s, %s, -99, 'CNY')",
                [entry.pk, receivable.pk, entry.pk, revenue.pk],
            )
        immediate()


def test_the_database_refuses_an_entry_without_legs() -> None:
    with pytest.raises(IntegrityError, match="at least two legs"), transaction.atomic():
        JournalEntry.objects.create(kind="raw", description="raw", reference="raw", posted_at="2026-03-01T00:00Z")
        immediate()


def test_the_database_refuses_a_zero_leg(accounts) -> None:
    receivable, revenue = accounts
    entry = entry_post(kind="t", description="t", reference="r", legs=[(receivable, 5), (revenue, -5)])

    with pytest.raises(IntegrityError), transaction.atomic():
        Leg.objects.create(entry=entry, account=receivable, amount=0)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE billing_leg SET amount = amount * 2",
        "DELETE FROM billing_leg",
        "UPDATE billing_journalentry SET description = 'changed'",
        "DELETE FROM billing_journalentry",
    ],
)
def test_posted_entries_can_be_neither_updated_nor_deleted(accounts, statement: str) -> None:
    receivable, revenue = accounts
    entry_post(kind="t", description="t", reference="r", legs=[(receivable, 700), (revenue, -700)])
    immediate()

    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)

    assert account_balance(receivable) == 700


def test_a_correction_is_a_reversing_entry(accounts) -> None:
    receivable, revenue = accounts
    entry = entry_post(kind="t", description="t", reference="r", legs=[(receivable, 700), (revenue, -700)])

    reversal = entry_reverse(entry=entry, reason="posted twice")
    immediate()

    assert reversal.reverses == entry
    assert account_balance(receivable) == account_balance(revenue) == 0
    assert Leg.objects.filter(entry=entry).count() == 2


def test_the_service_refuses_an_unbalanced_entry_before_the_database(accounts) -> None:
    receivable, revenue = accounts

    with pytest.raises(ValueError, match="sum to 1"):
        entry_post(kind="t", description="t", reference="r", legs=[(receivable, 101), (revenue, -100)])


def test_accounts_are_one_per_organization_and_purpose(buyer) -> None:
    first = account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer)

    assert account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer) == first
    assert account_for(purpose=Purpose.PLATFORM_REVENUE) == account_for(purpose=Purpose.PLATFORM_REVENUE)
    assert Account.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_transactions_making_the_same_new_accounts_in_any_order_never_deadlock() -> None:
    providers = [ProviderFactory().pk for _ in range(6)]
    orders = [providers, providers[::-1], providers[2:] + providers[:2], providers[::2] + providers[1::2]] * 2

    def make(organization_ids: list) -> None:  # type: ignore[type-arg]
        with transaction.atomic():
            accounts_for(purpose=Purpose.PROVIDER_PAYABLE, organization_ids=organization_ids)
            time.sleep(0.2)  # hold the new rows, uncommitted, while the others try to make them

    run_concurrently([partial(make, order) for order in orders])

    assert Account.objects.filter(purpose=Purpose.PROVIDER_PAYABLE).count() == 6
