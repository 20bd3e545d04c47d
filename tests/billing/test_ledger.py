import time
from functools import partial

import pytest
from django.db import IntegrityError, connection, transaction

from billing.models import Account, JournalEntry, Leg
from billing.services.ledger import Purpose, account_balance, account_for, accounts_for, entry_post, entry_reverse
from tests.factories import ProviderFactory
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db

TEST_AT = "2026-03-01T00:00Z"


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


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE billing_leg",
        "TRUNCATE billing_journalentry CASCADE",
        "TRUNCATE billing_account CASCADE",  # takes the legs with it
        "TRUNCATE organizations_organization CASCADE",  # takes the accounts and their legs
    ],
)
def test_the_database_refuses_to_truncate_the_ledger(accounts, statement: str) -> None:
    receivable, revenue = accounts
    entry_post(kind="t", description="t", reference="r", legs=[(receivable, 700), (revenue, -700)])
    immediate()

    refused = pytest.raises(IntegrityError, match=r"TRUNCATE of billing_\w+ refused")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)

    assert account_balance(receivable) == 700


@pytest.mark.parametrize("value", ["on", "true", "1"])
def test_no_session_setting_opens_truncate_only_the_id_of_the_transaction_that_sets_it(accounts, value) -> None:
    receivable, revenue = accounts
    entry_post(kind="t", description="t", reference="r", legs=[(receivable, 700), (revenue, -700)])
    immediate()

    with pytest.raises(IntegrityError, match="refused"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('compute_grid.allow_truncate', %s, false)", [value])
        cursor.execute("TRUNCATE billing_leg")

    assert account_balance(receivable) == 700


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_legs_added_to_an_entry_already_posted(buyer) -> None:
    receivable = account_for(purpose=Purpose.BUYER_RECEIVABLE, organization=buyer)
    revenue = account_for(purpose=Purpose.PLATFORM_REVENUE)
    entry = entry_post(kind="t", description="t", reference="r", legs=[(receivable, 700), (revenue, -700)])
    assert entry is not None  # committed: its transaction is over

    with pytest.raises(IntegrityError, match="is posted"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(  # balanced, so only the new rule stands in the way
            "INSERT INTO billing_leg (entry_id, account_id, amount, currency) VALUES (%s, %s, 5000, 'CNY'),"
            " (%s, %s, -5000, 'CNY')",
            [entry.pk, receivable.pk, entry.pk, revenue.pk],
        )

    assert (account_balance(receivable), Leg.objects.filter(entry=entry).count()) == (700, 2)


def test_legs_may_be_added_in_the_transaction_that_creates_the_entry_even_from_a_savepoint(accounts) -> None:
    receivable, revenue = accounts

    with transaction.atomic():
        with transaction.atomic():  # a savepoint: a subtransaction of its own
            entry = JournalEntry.objects.create(kind="raw", description="raw", reference="raw", posted_at=TEST_AT)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO billing_leg (entry_id, account_id, amount, currency) VALUES (%s, %s, 40, 'CNY'),"
                " (%s, %s, -40, 'CNY')",
                [entry.pk, receivable.pk, entry.pk, revenue.pk],
            )
        immediate()

    assert account_balance(receivable) == 40


def test_the_database_refuses_a_leg_in_another_currency_than_its_accounts(accounts) -> None:
    receivable, revenue = accounts  # both CNY
    usd = Account.objects.create(purpose=Purpose.STRIPE_CLEARING, currency="USD")

    with pytest.raises(IntegrityError, match="billing_leg_in_account_currency"), transaction.atomic():
        entry = JournalEntry.objects.create(kind="raw", description="raw", reference="raw", posted_at=TEST_AT)
        with connection.cursor() as cursor:  # balanced in USD, but on CNY accounts
            cursor.execute(
                "INSERT INTO billing_leg (entry_id, account_id, amount, currency) VALUES (%s, %s, 100, 'USD'),"
                " (%s, %s, -100, 'USD')",
                [entry.pk, receivable.pk, entry.pk, revenue.pk],
            )
    with pytest.raises(IntegrityError, match="billing_leg_in_account_currency"), transaction.atomic():
        entry = JournalEntry.objects.create(kind="raw", description="raw", reference="raw", posted_at=TEST_AT)
        with connection.cursor() as cursor:  # balanced in CNY, but one leg on a USD account
            cursor.execute(
                "INSERT INTO billing_leg (entry_id, account_id, amount, currency) VALUES (%s, %s, 100, 'CNY'),"
                " (%s, %s, -100, 'CNY')",
                [entry.pk, usd.pk, entry.pk, revenue.pk],
            )

    assert account_balance(receivable) == account_balance(usd) == 0


def test_an_account_with_legs_cannot_change_its_currency(accounts) -> None:
    receivable, revenue = accounts
    entry_post(kind="t", description="t", reference="r", legs=[(receivable, 700), (revenue, -700)])

    with pytest.raises(IntegrityError, match="billing_leg_in_account_currency"), transaction.atomic():
        Account.objects.filter(pk=receivable.pk).update(currency="USD")

    receivable.refresh_from_db()
    assert receivable.currency == "CNY"


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
