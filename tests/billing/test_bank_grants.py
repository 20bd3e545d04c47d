"""Compute bank credit: grants, the burn order, expiry into breakage, the books (ledger = grants)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction

from billing.models import BankEvent, BankMovement, CreditGrant, JournalEntry
from billing.services.bank.grants import bank_draw, bank_draws_reverse, grants_expire
from billing.services.bank.state import bank_state
from billing.services.ledger import Purpose, balance_of
from billing.services.reconcile import reconcile
from core.exceptions import RuleViolation
from tests.billing.factories import credit, prepaid

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def remaining(*grants: CreditGrant) -> list[int]:
    return [CreditGrant.objects.get(pk=grant.pk).remaining for grant in grants]


def test_a_promotion_is_granted_credit_kept_apart_from_paid_credit_in_the_ledger(buyer) -> None:
    credit(buyer, 50_000, source="promotion", at=NOW)
    credit(buyer, 20_000, source="top_up", at=NOW)

    assert bank_state(buyer_id=buyer.pk, at=NOW).balance == 70_000
    assert balance_of(purpose=Purpose.BANK_GRANTED, organization=buyer) == -50_000
    assert balance_of(purpose=Purpose.BANK_PAID, organization=buyer) == -20_000
    assert balance_of(purpose=Purpose.PROMOTION_EXPENSE) == 50_000
    assert balance_of(purpose=Purpose.STRIPE_CLEARING) == 20_000
    (movement,) = BankMovement.objects.filter(grant__source="promotion")
    assert (movement.reason, movement.amount, movement.entry.kind) == ("grant", 50_000, "bank.grant.promotion")


def test_credit_is_spent_soonest_expiring_first_then_by_priority_then_oldest(buyer) -> None:
    never = credit(buyer, 1_000, at=NOW)
    late = credit(buyer, 1_000, at=NOW, expires_at=NOW + timedelta(days=60))
    soon_low_priority = credit(buyer, 1_000, at=NOW, expires_at=NOW + timedelta(days=30), priority=200)
    soon_older = credit(buyer, 1_000, at=NOW, expires_at=NOW + timedelta(days=30), priority=10)
    soon_newer = credit(buyer, 1_000, at=NOW + timedelta(seconds=1), expires_at=NOW + timedelta(days=30), priority=10)

    bank_draw(buyer=buyer, amount=2_500, reference="t:1", now=NOW + timedelta(minutes=1))
    assert remaining(soon_older, soon_newer, soon_low_priority, late, never) == [0, 0, 500, 1_000, 1_000]

    bank_draw(buyer=buyer, amount=1_000, reference="t:2", now=NOW + timedelta(minutes=2))
    assert remaining(soon_low_priority, late, never) == [0, 500, 1_000]

    bank_draw(buyer=buyer, amount=1_000, reference="t:3", now=NOW + timedelta(minutes=3))
    assert remaining(late, never) == [0, 500]


def test_a_draw_bigger_than_the_balance_is_refused_whole_and_changes_nothing(buyer) -> None:
    grant = credit(buyer, 1_000, at=NOW)

    with pytest.raises(RuleViolation) as refused:
        bank_draw(buyer=buyer, amount=1_001, reference="t:big", now=NOW)

    assert refused.value.code == "insufficient_funds"
    assert remaining(grant) == [1_000]
    assert not JournalEntry.objects.filter(kind="bank.draw").exists()


def test_a_partial_draw_takes_what_there_is_and_never_goes_below_zero(buyer) -> None:
    grant = credit(buyer, 1_000, at=NOW)

    assert bank_draw(buyer=buyer, amount=5_000, reference="t:partial", partial=True, now=NOW) == 1_000
    assert bank_draw(buyer=buyer, amount=5_000, reference="t:again", partial=True, now=NOW) == 0
    assert remaining(grant) == [0]


def test_the_database_refuses_a_grant_below_zero_whatever_the_code_does(buyer) -> None:
    grant = credit(buyer, 1_000, at=NOW)

    with (
        pytest.raises(IntegrityError, match="grant_remaining_not_negative"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE billing_creditgrant SET remaining = -1 WHERE id = %s", [grant.pk])


def test_expired_credit_moves_to_breakage_once_and_is_no_longer_spendable(buyer) -> None:
    expiring = credit(buyer, 3_000, at=NOW, expires_at=NOW + timedelta(days=1))
    lasting = credit(buyer, 1_000, at=NOW)
    bank_draw(buyer=buyer, amount=1_000, reference="t:before", now=NOW + timedelta(hours=1))

    with time_machine.travel(NOW + timedelta(days=1, seconds=1), tick=False):
        assert bank_state(buyer_id=buyer.pk, at=NOW + timedelta(days=1, seconds=1)).balance == 1_000
        assert grants_expire() == 2_000
        assert grants_expire() == 0

    assert remaining(expiring, lasting) == [0, 1_000]
    assert balance_of(purpose=Purpose.BREAKAGE) == -2_000
    assert balance_of(purpose=Purpose.BANK_GRANTED, organization=buyer) == -1_000
    (expiry,) = BankMovement.objects.filter(reason="expiry")
    assert (expiry.grant_id, expiry.amount, expiry.entry.kind) == (expiring.pk, -2_000, "bank.expiry")
    assert reconcile() == []


def test_credit_given_back_after_its_grant_expired_goes_to_breakage_at_once(buyer) -> None:
    grant = credit(buyer, 3_000, at=NOW, expires_at=NOW + timedelta(days=1))
    bank_draw(buyer=buyer, amount=3_000, reference="invoice:x", now=NOW)

    assert bank_draws_reverse(buyer=buyer, reference="invoice:x", reason="t", now=NOW + timedelta(days=2)) == 3_000
    assert bank_draws_reverse(buyer=buyer, reference="invoice:x", reason="t", now=NOW + timedelta(days=2)) == 0

    assert remaining(grant) == [0]
    assert balance_of(purpose=Purpose.BREAKAGE) == -3_000
    assert balance_of(purpose=Purpose.BANK_CLEARING, organization=buyer) == 0


def test_the_bank_balance_always_equals_its_ledger_accounts(buyer, other_buyer) -> None:
    credit(buyer, 10_000, source="top_up", at=NOW)
    credit(buyer, 5_000, at=NOW, expires_at=NOW + timedelta(days=1))
    credit(other_buyer, 7_000, source="refund", at=NOW)
    steps = [
        lambda: bank_draw(buyer=buyer, amount=6_000, reference="invoice:a", now=NOW),
        lambda: bank_draw(buyer=other_buyer, amount=9_999, reference="invoice:b", partial=True, now=NOW),
        lambda: bank_draws_reverse(buyer=buyer, reference="invoice:a", reason="t", now=NOW),
        lambda: grants_expire(now=NOW + timedelta(days=2)),
        lambda: bank_draw(buyer=buyer, amount=10_000, reference="invoice:c", now=NOW + timedelta(days=2)),
    ]

    for step in steps:
        step()
        for organization in (buyer, other_buyer):
            grants = CreditGrant.objects.filter(buyer=organization)
            paid = sum(g.remaining for g in grants if g.source == "top_up")
            granted = sum(g.remaining for g in grants if g.source != "top_up")
            assert balance_of(purpose=Purpose.BANK_PAID, organization=organization) == -paid
            assert balance_of(purpose=Purpose.BANK_GRANTED, organization=organization) == -granted

    assert reconcile() == []


def test_reconcile_finds_a_grant_changed_behind_the_ledgers_back(buyer) -> None:
    grant = credit(buyer, 1_000, at=NOW)
    CreditGrant.objects.filter(pk=grant.pk).update(remaining=900)

    assert [(d.check, d.ledger, d.expected) for d in reconcile()] == [("bank bank_granted", -1_000, -900)]


def test_an_operator_grants_promotional_credit_in_the_admin(admin_client, buyer) -> None:
    expires = NOW + timedelta(days=400)

    response = admin_client.post(
        "/admin/billing/creditgrant/add/",
        {
            "buyer": buyer.pk,
            "source": "promotion",
            "amount_yuan": "1500.00",
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": expires.strftime("%H:%M:%S"),
            "priority": "10",
            "note": "Welcome credit",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    grant = CreditGrant.objects.get()
    assert (grant.source, grant.amount, grant.remaining, grant.priority) == ("promotion", 150_000, 150_000, 10)
    assert grant.granted_by.startswith("admin:")
    assert balance_of(purpose=Purpose.BANK_GRANTED, organization=buyer) == -150_000
    assert reconcile() == []


def test_the_admin_refuses_credit_that_expired_already_and_grants_nothing(admin_client, buyer) -> None:
    response = admin_client.post(
        "/admin/billing/creditgrant/add/",
        {"buyer": buyer.pk, "source": "promotion", "amount_yuan": "10.00", "expires_at_0": "2020-01-01",
         "expires_at_1": "00:00:00", "priority": "100"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "in the future" in response.content.decode()
    assert not CreditGrant.objects.exists()


def test_the_bank_pages_open_for_operators(admin_client, buyer) -> None:
    grant = credit(buyer, 1_000)
    for url in [
        "/admin/billing/bank/",
        "/admin/billing/creditgrant/",
        f"/admin/billing/creditgrant/{grant.pk}/change/",
        "/admin/billing/creditgrant/add/",
        "/admin/billing/bankmovement/",
        "/admin/billing/credithold/",
        "/admin/billing/topup/",
        "/admin/billing/bankevent/",
    ]:
        assert admin_client.get(url).status_code == 200, url


def _low_balance_message(buyer) -> str:  # type: ignore[no-untyped-def]
    credit(buyer, 10_000)
    bank_draw(buyer=buyer, amount=9_500, reference="test:spend")
    return BankEvent.objects.get(buyer=buyer, kind="low_balance").message


def test_a_postpaid_buyer_low_on_credit_is_told_its_card_pays_the_rest_not_that_work_stops(buyer) -> None:
    message = _low_balance_message(buyer)

    assert message.startswith("Available credit is 5.00 CNY, below 100.00")
    assert "prepaid" not in message
    assert "charged to your card" in message


def test_a_prepaid_buyer_low_on_credit_is_told_to_top_up_to_keep_its_work_running(buyer) -> None:
    message = _low_balance_message(prepaid(buyer))

    assert message.endswith("top up to keep prepaid work running.")
