"""A redemption its issuer rejects in a claim review goes back to the program's budget, never to
the voucher: the company is billed it, so the voucher may not spend it again."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from tests.vouchers.factories import (
    FINALIZED_AT,
    charge_line,
    fresh,
    local,
    program_factory,
    redeem,
    voucher_factory,
)
from vouchers.models import LATE_INVOICE_GRACE, Redemption, Reversal, VoucherProgram, YearlyCapUsage
from vouchers.selectors import program_burndown, program_report
from vouchers.services import redemptions_reject, voucher_revoke, vouchers_expire, vouchers_reverse

pytestmark = pytest.mark.django_db

REVIEWED_AT = FINALIZED_AT + timedelta(days=40)


def _program(voucher) -> VoucherProgram:  # type: ignore[no-untyped-def]
    return VoucherProgram.objects.get(pk=voucher.program_id)


def _reject_all() -> list[Redemption]:
    return redemptions_reject(redemption_ids=list(Redemption.objects.values_list("pk", flat=True)), at=REVIEWED_AT)


def test_a_rejected_redemption_of_an_active_voucher_goes_to_the_budget_not_the_voucher(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000)
    redeem(buyer, charge_line(provider, 100_000))
    assert (fresh(voucher).remaining, _program(voucher).budget_left) == (80_000, _program(voucher).budget - 100_000)

    (rejected,) = _reject_all()

    assert (fresh(voucher).status, fresh(voucher).remaining, fresh(voucher).rejected) == ("active", 80_000, 20_000)
    assert fresh(voucher).released == 0
    program = _program(voucher)
    assert (program.committed, program.budget_left) == (80_000, program.budget - 80_000)
    reversal = Reversal.objects.get(redemption=rejected)
    assert (reversal.amount, reversal.returned, reversal.breakage, reversal.rejected) == (20_000, 0, 0, 20_000)
    assert YearlyCapUsage.objects.get(buyer=buyer).redeemed == 0


def test_an_exhausted_voucher_stays_exhausted_and_pays_nothing_more_after_a_rejection(buyer, provider) -> None:
    voucher = voucher_factory(program_factory(coverage_share="0.5"), buyer, face_value=10_000)
    redeem(buyer, charge_line(provider, 100_000))
    assert fresh(voucher).status == "exhausted"

    _reject_all()
    later = redeem(buyer, charge_line(provider, 100_000), invoice="invoice-2", at=FINALIZED_AT + timedelta(days=41))

    assert (fresh(voucher).status, fresh(voucher).remaining, fresh(voucher).rejected) == ("exhausted", 0, 10_000)
    assert later.total == 0
    assert _program(voucher).committed == 0


def test_rejecting_again_changes_nothing(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000)
    redeem(buyer, charge_line(provider, 100_000))
    _reject_all()
    before = (fresh(voucher).remaining, fresh(voucher).rejected, _program(voucher).committed)

    again = _reject_all()

    assert again == []
    assert (fresh(voucher).remaining, fresh(voucher).rejected, _program(voucher).committed) == before
    assert Reversal.objects.count() == 1


def test_a_redemption_voided_first_is_not_rejected_as_well(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000)
    redeem(buyer, charge_line(provider, 100_000))
    vouchers_reverse(invoice_ref="invoice-1", at=FINALIZED_AT + timedelta(days=1))

    assert _reject_all() == []
    assert (fresh(voucher).remaining, fresh(voucher).rejected, _program(voucher).committed) == (100_000, 0, 100_000)


@pytest.mark.parametrize("ending", ["expired", "revoked"])
def test_a_rejected_redemption_of_an_ended_voucher_goes_to_the_budget_once(buyer, provider, ending) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000, valid_until=local(2026, 4, 1))
    redeem(buyer, charge_line(provider, 100_000))
    if ending == "expired":
        vouchers_expire(now=local(2026, 4, 1) + LATE_INVOICE_GRACE)
    else:
        voucher_revoke(voucher=voucher, by="test", now=FINALIZED_AT)
    assert (fresh(voucher).released, _program(voucher).committed) == (80_000, 20_000)

    _reject_all()

    assert (fresh(voucher).status, fresh(voucher).released, fresh(voucher).rejected) == (ending, 80_000, 20_000)
    assert _program(voucher).committed == 0


def test_the_report_and_burndown_count_a_rejection_apart_from_voids_and_expiry(buyer, provider, issuer) -> None:
    program = program_factory(issuer, budget=1_000_000)
    voucher_factory(program, buyer, face_value=100_000)
    redeem(buyer, charge_line(provider, 100_000, ref="kept"), charge_line(provider, 50_000, ref="rejected"))
    redemptions_reject(redemption_ids=[Redemption.objects.get(line_ref="rejected").pk], at=REVIEWED_AT)
    program.refresh_from_db()

    report = program_report(program=program)
    last = program_burndown(program=program, until=REVIEWED_AT)[-1]

    assert (report["redeemed"], report["reversed"], report["rejected"]) == (20_000, 0, 10_000)
    assert (report["outstanding"], report["committed"], report["left"]) == (70_000, 90_000, 910_000)
    assert report["granted"] == sum(
        report[key] for key in ("redeemed", "outstanding", "expired", "revoked", "rejected")
    )
    assert report["left"] == report["budget"] - report["redeemed"] - report["outstanding"]
    keys = ("granted", "redeemed", "outstanding", "expired", "revoked", "rejected", "left")
    assert {key: last[key] for key in keys} == {key: report[key] for key in keys}


def test_the_database_refuses_a_rejection_beyond_the_face_value_or_in_part(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=100_000)
    redeem(buyer, charge_line(provider, 100_000))
    redemption = Redemption.objects.get()

    with pytest.raises(IntegrityError, match="voucher_remaining_within_face_value"), transaction.atomic():
        type(voucher).objects.filter(pk=voucher.pk).update(rejected=20_001)
    with pytest.raises(IntegrityError, match="reversal_parts_add_up"), transaction.atomic():
        Reversal.objects.create(
            redemption=redemption, amount=20_000, returned=10_000, breakage=0, rejected=10_000, reversed_at=REVIEWED_AT
        )
