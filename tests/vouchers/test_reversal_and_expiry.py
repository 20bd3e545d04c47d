"""Voided invoices give their voucher value back; vouchers expire and leave breakage."""

from datetime import timedelta

import pytest
from django.conf import settings

from core.exceptions import ConflictError
from tests.vouchers.factories import (
    FINALIZED_AT,
    GRANTED_AT,
    YEAR_END,
    charge_line,
    fresh,
    local,
    program_factory,
    redeem,
    voucher_factory,
)
from vouchers import tasks
from vouchers.models import LATE_INVOICE_GRACE, Reversal, VoucherProgram, YearlyCapUsage
from vouchers.services import voucher_revoke, vouchers_expire, vouchers_reverse

pytestmark = pytest.mark.django_db

VOIDED_AT = FINALIZED_AT + timedelta(days=3)


def _cap(buyer) -> int:  # type: ignore[no-untyped-def]
    return YearlyCapUsage.objects.get(buyer=buyer).redeemed


def test_voiding_an_invoice_returns_its_value_to_the_voucher_and_the_yearly_cap(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer)
    redeem(buyer, charge_line(provider, 100_000))
    assert _cap(buyer) == 20_000

    result = vouchers_reverse(invoice_ref="invoice-1", at=VOIDED_AT)

    (back,) = result.vouchers
    assert (back.voucher_code, back.returned, back.breakage, result.total) == (voucher.code, 20_000, 0, 20_000)
    assert result.by_issuer() == {str(voucher.program.issuer_id): 20_000}
    assert fresh(voucher).remaining == voucher.face_value
    assert _cap(buyer) == 0
    assert Reversal.objects.get().amount == 20_000


def test_an_exhausted_voucher_is_active_again_after_a_reversal(buyer, provider) -> None:
    voucher = voucher_factory(program_factory(coverage_share="0.5"), buyer, face_value=10_000)
    redeem(buyer, charge_line(provider, 100_000))
    assert fresh(voucher).status == "exhausted"

    vouchers_reverse(invoice_ref="invoice-1", at=VOIDED_AT)

    assert (fresh(voucher).status, fresh(voucher).remaining) == ("active", 10_000)


def test_reversing_again_changes_nothing_and_answers_the_same(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer)
    redeem(buyer, charge_line(provider, 100_000))
    first = vouchers_reverse(invoice_ref="invoice-1", at=VOIDED_AT)

    again = vouchers_reverse(invoice_ref="invoice-1", at=VOIDED_AT + timedelta(hours=1))

    assert (again.vouchers, again.replayed) == (first.vouchers, True)
    assert Reversal.objects.count() == 1
    assert fresh(voucher).remaining == voucher.face_value


def test_reversing_an_invoice_no_voucher_paid_changes_nothing(buyer) -> None:
    result = vouchers_reverse(invoice_ref="never-redeemed", at=VOIDED_AT)

    assert (result.vouchers, result.total) == ((), 0)


def test_a_reversed_invoice_cannot_be_redeemed_again(buyer, provider) -> None:
    voucher_factory(buyer=buyer)
    line = charge_line(provider, 100_000)
    redeem(buyer, line)
    vouchers_reverse(invoice_ref="invoice-1", at=VOIDED_AT)

    with pytest.raises(ConflictError) as refused:
        redeem(buyer, line)

    assert refused.value.code == "invoice_reversed"


def test_value_returned_to_a_voucher_that_expired_meanwhile_is_breakage(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000, valid_until=local(2026, 4, 1))
    program = voucher.program
    redeem(buyer, charge_line(provider, 100_000))
    expired_at = local(2026, 4, 1) + LATE_INVOICE_GRACE
    assert vouchers_expire(now=expired_at) == 1
    assert (fresh(voucher).status, fresh(voucher).released) == ("expired", 80_000)

    result = vouchers_reverse(invoice_ref="invoice-1", at=expired_at + timedelta(days=1))

    (back,) = result.vouchers
    assert (back.returned, back.breakage) == (0, 20_000)
    assert (fresh(voucher).remaining, fresh(voucher).released) == (0, 100_000)
    program.refresh_from_db()
    assert program.committed == 0
    assert _cap(buyer) == 0


def test_a_reversal_after_the_grace_expires_the_voucher_itself(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000, valid_until=local(2026, 4, 1))
    redeem(buyer, charge_line(provider, 100_000))

    (back,) = vouchers_reverse(invoice_ref="invoice-1", at=local(2026, 4, 1) + LATE_INVOICE_GRACE).vouchers

    assert (back.returned, back.breakage) == (0, 20_000)
    assert (fresh(voucher).status, fresh(voucher).released) == ("expired", 100_000)


def test_value_returned_to_a_revoked_voucher_goes_back_to_the_budget(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000)
    redeem(buyer, charge_line(provider, 100_000))
    voucher_revoke(voucher=voucher, by="test", now=FINALIZED_AT)

    (back,) = vouchers_reverse(invoice_ref="invoice-1", at=VOIDED_AT).vouchers

    assert (back.returned, back.breakage) == (0, 20_000)
    assert (fresh(voucher).status, fresh(voucher).released) == ("revoked", 100_000)
    assert VoucherProgram.objects.get(pk=voucher.program_id).committed == 0


def test_expiry_gives_what_a_voucher_left_back_to_the_budget(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000, valid_until=local(2026, 4, 1))
    redeem(buyer, charge_line(provider, 100_000))

    vouchers_expire(now=local(2026, 4, 1) + LATE_INVOICE_GRACE)

    voucher = fresh(voucher)
    assert (voucher.status, voucher.remaining, voucher.released, voucher.ended_by) == (
        "expired",
        0,
        80_000,
        "scheduler",
    )
    program = VoucherProgram.objects.get(pk=voucher.program_id)
    assert (program.committed, program.budget_left) == (20_000, program.budget - 20_000)


def test_expiring_twice_expires_nothing_more(buyer) -> None:
    voucher_factory(buyer=buyer, valid_until=local(2026, 4, 1))
    later = local(2026, 4, 1) + LATE_INVOICE_GRACE

    assert (vouchers_expire(now=later), vouchers_expire(now=later + timedelta(hours=1))) == (1, 0)


def test_a_voucher_within_its_grace_does_not_expire_yet(buyer) -> None:
    voucher = voucher_factory(buyer=buyer, valid_until=local(2026, 4, 1))

    assert vouchers_expire(now=local(2026, 4, 1) + LATE_INVOICE_GRACE - timedelta(seconds=1)) == 0
    assert fresh(voucher).status == "active"


def test_an_exhausted_voucher_expires_with_nothing_to_release(buyer, provider) -> None:
    voucher = voucher_factory(
        program_factory(coverage_share="0.5"), buyer, face_value=10_000, valid_until=local(2026, 4, 1)
    )
    redeem(buyer, charge_line(provider, 100_000))

    vouchers_expire(now=local(2026, 4, 1) + LATE_INVOICE_GRACE)

    assert (fresh(voucher).status, fresh(voucher).released) == ("expired", 0)


def test_expiry_closes_programs_whose_validity_ended() -> None:
    program = program_factory()

    vouchers_expire(now=YEAR_END)

    program.refresh_from_db()
    assert (program.status, program.closed_at) == ("closed", YEAR_END)


def test_the_expiry_task_runs_the_service_and_is_on_the_beat_schedule(buyer) -> None:
    voucher_factory(buyer=buyer, valid_until=GRANTED_AT + timedelta(days=1), now=GRANTED_AT)

    assert tasks.vouchers_expire.apply().get() == 1
    assert settings.CELERY_BEAT_SCHEDULE["vouchers-expire"]["task"] == "vouchers.tasks.vouchers_expire"
