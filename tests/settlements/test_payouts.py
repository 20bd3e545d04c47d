"""Provider payouts: accounts with a cooling-off period, runs that pay each share once, the bank's answers."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing.models import Account, ProviderStatement
from billing.services.ledger import Purpose, balance_of
from billing.services.reconcile import reconcile
from core.exceptions import ConflictError, RuleViolation
from organizations.models import AuditEvent
from settlements.models import PayoutItem, PayoutLine, PayoutRun
from settlements.services.accounts import payout_account_current, payout_account_set
from settlements.services.payouts import (
    payout_batch_csv,
    payout_line_settle,
    payout_return_file_apply,
    payout_run_create,
    payout_run_send,
)
from tests.settlements.conftest import MAY_20
from tests.threads import run_concurrently

pytestmark = pytest.mark.django_db
MARCH = datetime(2026, 3, 15, tzinfo=UTC)


def test_a_provider_registers_its_account_shown_masked(provider: Any, make_client: Any) -> None:
    client = make_client(provider)

    answer = client.put(
        "/api/v1/payout-account/",
        {
            "account_name": f" {provider.legal_name} ",
            "bank_name": "ICBC",
            "branch": "Xicheng",
            "account_number": "6222000011112222",
        },
        format="json",
    )

    assert answer.status_code == 200, answer.content
    assert answer.json()["current"]["account_number"] == "************2222"
    assert "6222000011112222" not in answer.content.decode()


def test_an_account_name_other_than_the_legal_name_is_refused(provider: Any, make_client: Any) -> None:
    answer = make_client(provider).put(
        "/api/v1/payout-account/",
        {"account_name": "Someone Else Ltd", "bank_name": "ICBC", "branch": "x", "account_number": "6222000011112222"},
        format="json",
    )

    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "account_name_mismatch")
    assert payout_account_current(provider=provider, at=datetime(2100, 1, 1, tzinfo=UTC)) is None


def test_a_change_waits_the_cooling_off_period_and_is_audited(provider: Any, account: Any, settings: Any) -> None:
    settings.PAYOUT_ACCOUNT_COOLING_OFF_HOURS = 72
    changed = payout_account_set(
        provider=provider,
        account_name=provider.legal_name,
        bank_name="CCB",
        branch="b",
        account_number="99998888777766",
        by="key",
    )

    assert payout_account_current(provider=provider, at=changed.requested_at) == account
    assert payout_account_current(provider=provider, at=changed.requested_at + timedelta(hours=72)) == changed
    events = AuditEvent.objects.filter(action="payout_account.change", organization_id=provider.pk).order_by(
        "occurred_at"
    )
    assert [e.summary["account_number"] for e in events] == ["************2233", "**********7766"]
    assert events.last().summary["previous"] == "************2233"  # type: ignore[union-attr]
    assert "99998888777766" not in str([e.summary for e in events])


def _owed(provider: Any) -> int:
    return -balance_of(purpose=Purpose.PROVIDER_PAYABLE, organization=provider)


def test_a_run_pays_the_collected_net_and_settles_through_transit_to_cash(
    provider: Any, account: Any, paid_march: Any
) -> None:
    net = ProviderStatement.objects.get(provider=provider).net

    run = payout_run_create(at=MARCH, by="operator", now=MAY_20)
    assert [(line.provider_id, line.amount) for line in run.lines.all()] == [(provider.pk, net)]
    csv = payout_batch_csv(run)
    assert csv.splitlines()[2].startswith(f"D,1,{run.lines.get().reference},6222020200112233,")
    assert csv.splitlines()[-1].startswith("T,1,")

    payout_run_send(run_id=run.pk, by="operator", now=MAY_20)
    assert (_owed(provider), balance_of(purpose=Purpose.PAYOUTS_IN_TRANSIT)) == (0, -net)
    payout_line_settle(run_id=run.pk, line_id=run.lines.get().pk, paid=True, by="operator", now=MAY_20)

    assert (balance_of(purpose=Purpose.PAYOUTS_IN_TRANSIT), balance_of(purpose=Purpose.CASH)) == (0, -net)
    assert PayoutRun.objects.get().status == "settled"
    assert reconcile() == []


def test_a_returned_line_goes_back_to_payable_with_its_reason_and_is_paid_by_the_next_run(
    provider: Any, account: Any, paid_march: Any
) -> None:
    run = payout_run_create(at=MARCH, by="operator", now=MAY_20)
    payout_run_send(run_id=run.pk, by="operator", now=MAY_20)
    line = run.lines.get()

    payout_return_file_apply(
        run_id=run.pk, by="operator", content=f"reference,status,reason\n{line.reference},FAILED,account closed\n"
    )
    payout_return_file_apply(
        run_id=run.pk, by="operator", content=f"reference,status,reason\n{line.reference},FAILED,account closed\n"
    )

    line.refresh_from_db()
    assert (line.status, line.failure_reason) == ("failed", "account closed")
    assert _owed(provider) == line.amount
    assert reconcile() == []
    again = payout_run_create(at=MARCH, by="operator", now=MAY_20)
    assert again.lines.get().amount == line.amount


def test_a_bad_return_file_changes_nothing(provider: Any, account: Any, paid_march: Any) -> None:
    run = payout_run_create(at=MARCH, by="operator", now=MAY_20)
    payout_run_send(run_id=run.pk, by="operator", now=MAY_20)
    line = run.lines.get()

    with pytest.raises(RuleViolation):
        payout_return_file_apply(
            run_id=run.pk, by="operator", content=f"reference,status,reason\n{line.reference},PAID,\nNOPE,PAID,\n"
        )

    assert PayoutLine.objects.get().status == "sent"


def test_a_retried_run_finds_nothing_left_to_pay(provider: Any, account: Any, paid_march: Any) -> None:
    payout_run_create(at=MARCH, by="operator", now=MAY_20)

    with pytest.raises(ConflictError) as refused:
        payout_run_create(at=MARCH, by="operator", now=MAY_20)

    assert refused.value.code == "nothing_to_pay"
    assert PayoutRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_runs_started_at_once_pay_each_provider_once(provider: Any, account: Any, paid_march: Any) -> None:
    outcomes: list[str] = []

    def start() -> None:
        try:
            payout_run_create(at=MARCH, by="operator", now=MAY_20)
            outcomes.append("run")
        except ConflictError as error:
            outcomes.append(error.code)

    run_concurrently([start] * 6)

    assert sorted(outcomes) == ["nothing_to_pay"] * 5 + ["run"]
    assert PayoutItem.objects.filter(provider=provider, active=True).count() == 1
    assert PayoutLine.objects.get().amount == ProviderStatement.objects.get(provider=provider).net


def test_a_provider_owed_less_than_the_minimum_is_carried_forward(
    provider: Any, account: Any, paid_march: Any, settings: Any
) -> None:
    settings.PAYOUT_MINIMUM_FEN = 10**12

    with pytest.raises(ConflictError) as refused:
        payout_run_create(at=MARCH, by="operator", now=MAY_20)

    assert refused.value.details["carried_forward"][0]["reason"].startswith("below the minimum")


def test_the_reserve_is_held_back_a_month(provider: Any, account: Any, paid_march: Any, settings: Any) -> None:
    settings.PAYOUT_RESERVE_RATE = "0.05"
    net = ProviderStatement.objects.get(provider=provider).net

    march = payout_run_create(at=MARCH, by="operator", now=MAY_20)
    april = payout_run_create(at=datetime(2026, 4, 15, tzinfo=UTC), by="operator", now=MAY_20)

    assert march.lines.get().amount + april.lines.get().amount == net
    assert april.lines.get().items.get().kind == "reserve"


def test_an_uncollected_invoice_is_held_back(provider: Any, account: Any, buyer: Any, paid_march: Any) -> None:
    type(paid_march).objects.filter(pk=paid_march.pk).update(status="uncollectible")

    with pytest.raises(ConflictError):
        payout_run_create(at=MARCH, by="operator", now=MAY_20)
    assert Account.objects.filter(purpose=Purpose.PAYOUTS_IN_TRANSIT).count() == 0


def test_an_invoice_voided_after_its_payout_is_clawed_back_by_the_next_run(
    provider: Any, account: Any, buyer: Any, paid_march: Any, settings: Any
) -> None:
    from billing.services.invoices import invoice_void

    run = payout_run_create(at=MARCH, by="operator", now=MAY_20)
    payout_run_send(run_id=run.pk, by="operator", now=MAY_20)
    payout_line_settle(run_id=run.pk, line_id=run.lines.get().pk, paid=True, by="operator", now=MAY_20)
    invoice_void(invoice_id=paid_march.pk, by="operator", now=MAY_20)
    assert _owed(provider) == -run.total  # the provider owes back what it was paid

    with pytest.raises(ConflictError):  # a negative balance is carried forward, never paid
        payout_run_create(at=MARCH, by="operator", now=MAY_20)

    assert reconcile() == []


def test_beat_builds_last_months_claims_and_starts_its_run_on_the_settlement_day(
    provider: Any, account: Any, paid_march: Any, settings: Any
) -> None:
    from settlements.models import SubsidyClaim
    from settlements.services.schedule import settlements_due

    settings.SETTLEMENT_DAY = 15
    assert settlements_due(now=datetime(2026, 4, 14, tzinfo=UTC)) == 0

    made = settlements_due(now=datetime(2026, 4, 16, tzinfo=UTC))
    again = settlements_due(now=datetime(2026, 4, 17, tzinfo=UTC))

    assert (made, again) == (1, 0)  # March's run (March's redemptions: none; April's claim comes in May)
    assert PayoutRun.objects.get().period_start.month in (2, 3)
    assert settlements_due(now=datetime(2026, 5, 16, tzinfo=UTC)) == 1  # April's claim
    assert SubsidyClaim.objects.count() == 1
