"""Redemption at invoice finalization: what billing calls with plain charge lines."""

from datetime import timedelta
from decimal import Decimal

import pytest

from core.exceptions import ConflictError
from core.money import share
from tests.factories import BuyerFactory, IssuerFactory, ProviderFactory
from tests.vouchers.factories import (
    APRIL,
    FINALIZED_AT,
    GRANTED_AT,
    MARCH,
    charge_line,
    fresh,
    local,
    program_factory,
    redeem,
    voucher_factory,
)
from vouchers.models import LATE_INVOICE_GRACE, Claim, Redemption, YearlyCapUsage
from vouchers.services import voucher_revoke

pytestmark = pytest.mark.django_db


def test_a_voucher_pays_its_programs_share_of_an_eligible_line(buyer, provider) -> None:
    voucher = voucher_factory(program_factory(coverage_share="0.2"), buyer, face_value=1_500_000)
    line = charge_line(provider, 100_000)

    result = redeem(buyer, line)

    assert result.total == 20_000
    (outcome,) = result.lines
    assert (outcome.voucher_amount, outcome.buyer_amount, outcome.reasons) == (20_000, 80_000, ())
    (paid,) = result.redemptions
    assert (paid.voucher_code, paid.amount, paid.line_ref) == (voucher.code, 20_000, "line-1")
    assert result.by_issuer() == {str(voucher.program.issuer_id): 20_000}
    assert fresh(voucher).remaining == 1_480_000


def test_each_redemption_is_a_row_tracing_the_invoice_line_lease_and_usage(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer)
    line = charge_line(provider, 100_000)

    redeem(buyer, line, invoice="invoice-42")

    row = Redemption.objects.get()
    assert (row.invoice_ref, row.line_ref, row.lease_id, row.pool_id) == (
        "invoice-42",
        "line-1",
        line.lease_id,
        line.pool_id,
    )
    assert (row.provider_id, row.hub, row.gpu_model, row.workload) == (provider.pk, "ningxia", "H100-80G", "training")
    assert (row.period_start, row.period_end, row.line_amount, row.voucher_id) == (*MARCH, 100_000, voucher.pk)


@pytest.mark.parametrize(
    ("amount", "coverage_share"),
    [(1001, "0.2"), (1, "0.5"), (3, "0.3333"), (5, "0.1"), (99_999, "0.6"), (12_345_678, "0.2999"), (7, "1")],
)
def test_the_voucher_part_and_the_buyers_part_add_up_to_the_line_exactly(
    buyer, provider, amount, coverage_share
) -> None:  # type: ignore[no-untyped-def]
    voucher_factory(program_factory(coverage_share=coverage_share), buyer, face_value=100_000_000)

    (outcome,) = redeem(buyer, charge_line(provider, amount)).lines

    assert outcome.voucher_amount == share(amount, Decimal(coverage_share))[0]
    assert outcome.voucher_amount + outcome.buyer_amount == amount


def test_a_voucher_never_pays_more_than_it_has_left(buyer, provider) -> None:
    voucher = voucher_factory(program_factory(coverage_share="0.5"), buyer, face_value=10_000)

    (outcome,) = redeem(buyer, charge_line(provider, 100_000)).lines

    assert (outcome.voucher_amount, outcome.buyer_amount) == (10_000, 90_000)
    assert [reason.code for reason in outcome.reasons] == ["voucher_exhausted"]
    assert (fresh(voucher).remaining, fresh(voucher).status) == (0, "exhausted")


def test_an_exhausted_voucher_pays_nothing_more(buyer, provider) -> None:
    voucher_factory(program_factory(coverage_share="0.5"), buyer, face_value=10_000)
    redeem(buyer, charge_line(provider, 100_000), invoice="first")

    (outcome,) = redeem(buyer, charge_line(provider, 100_000), invoice="second").lines

    assert outcome.voucher_amount == 0
    assert [reason.code for reason in outcome.reasons] == ["no_active_voucher"]


def test_several_vouchers_pay_soonest_expiring_first(buyer, provider) -> None:
    program = program_factory(coverage_share="0.2")
    later = voucher_factory(program, buyer, face_value=1_000_000)
    sooner = voucher_factory(program, buyer, face_value=5_000, valid_until=local(2026, 6, 30))

    result = redeem(buyer, charge_line(provider, 100_000))

    assert [(paid.voucher_code, paid.amount) for paid in result.redemptions] == [
        (sooner.code, 5_000),
        (later.code, 15_000),
    ]
    assert result.total == 20_000
    assert (fresh(sooner).status, fresh(later).remaining) == ("exhausted", 985_000)


def test_two_programs_never_both_pay_their_share_of_one_line(buyer, provider) -> None:
    twenty = voucher_factory(program_factory(coverage_share="0.2"), buyer, valid_until=local(2026, 6, 30))
    thirty = voucher_factory(program_factory(coverage_share="0.3"), buyer)

    result = redeem(buyer, charge_line(provider, 100_000))

    # The line gets the larger share, 30%: the second program only tops up the first.
    assert result.total == 30_000
    assert [(paid.voucher_code, paid.amount) for paid in result.redemptions] == [
        (twenty.code, 20_000),
        (thirty.code, 10_000),
    ]


@pytest.mark.parametrize(
    "relation",
    [
        "same_credit_code",
        "same_parent",
        "provider_is_parent",
        "buyer_is_parent",
        "provider_is_grandparent",
        "buyer_is_grandparent",
        "common_grandparent",
        "parent_is_the_providers_legal_entity",
    ],
)
def test_a_provider_in_the_buyers_group_is_never_paid(relation) -> None:  # type: ignore[no-untyped-def]
    group = BuyerFactory()
    if relation == "provider_is_grandparent":  # the case found: a grandchild got the discount at its group's pool
        provider = ProviderFactory()
        buyer = BuyerFactory(parent=BuyerFactory(parent=provider))
    elif relation == "buyer_is_grandparent":
        buyer = BuyerFactory()
        provider = ProviderFactory(parent=ProviderFactory(parent=buyer))
    elif relation == "common_grandparent":
        buyer = BuyerFactory(parent=BuyerFactory(parent=group))
        provider = ProviderFactory(parent=ProviderFactory(parent=group))
    elif relation == "parent_is_the_providers_legal_entity":
        provider = ProviderFactory()
        buyer = BuyerFactory(parent=BuyerFactory(credit_code=provider.credit_code))
    elif relation == "same_credit_code":
        buyer = BuyerFactory()
        provider = ProviderFactory(credit_code=buyer.credit_code)
    elif relation == "same_parent":
        buyer, provider = BuyerFactory(parent=group), ProviderFactory(parent=group)
    elif relation == "provider_is_parent":
        provider = ProviderFactory()
        buyer = BuyerFactory(parent=provider)
    else:
        buyer = BuyerFactory()
        provider = ProviderFactory(parent=buyer)
    voucher = voucher_factory(buyer=buyer)

    (outcome,) = redeem(buyer, charge_line(provider, 100_000)).lines

    assert outcome.voucher_amount == 0
    assert [reason.code for reason in outcome.reasons] == ["related_party"]
    assert fresh(voucher).remaining == voucher.face_value
    assert not Redemption.objects.exists()


def test_an_unrelated_provider_in_the_same_invoice_is_still_paid(buyer) -> None:
    voucher_factory(buyer=buyer)
    related = ProviderFactory(credit_code=buyer.credit_code)

    result = redeem(buyer, charge_line(related, 100_000, ref="a"), charge_line(ProviderFactory(), 100_000, ref="b"))

    assert [(line.line_ref, line.voucher_amount) for line in result.lines] == [("a", 0), ("b", 20_000)]


@pytest.mark.parametrize(
    ("terms", "line_changes", "code"),
    [
        ({"hubs": ["guizhou"]}, {}, "hub_not_eligible"),
        ({"gpu_models": ["910B"]}, {}, "gpu_model_not_eligible"),
        ({"workloads": ["batch_inference"]}, {}, "workload_not_eligible"),
        ({}, {"period": (local(2026, 2, 1), local(2026, 3, 1))}, "outside_validity"),
    ],
)
def test_an_ineligible_line_says_why(buyer, provider, terms, line_changes, code) -> None:  # type: ignore[no-untyped-def]
    voucher = voucher_factory(program_factory(**terms), buyer)

    (outcome,) = redeem(buyer, charge_line(provider, 100_000, **line_changes)).lines

    assert outcome.voucher_amount == 0
    assert [(reason.code, reason.voucher_code) for reason in outcome.reasons] == [(code, voucher.code)]


def test_only_approved_providers_are_paid(buyer) -> None:
    approved, other = ProviderFactory(), ProviderFactory()
    voucher_factory(program_factory(providers=[approved]), buyer)

    result = redeem(buyer, charge_line(approved, 100_000, ref="a"), charge_line(other, 100_000, ref="b"))

    assert [line.voucher_amount for line in result.lines] == [20_000, 0]
    assert [reason.code for reason in result.lines[1].reasons] == ["provider_not_approved"]


def test_a_buyer_without_vouchers_is_told_so(buyer, provider) -> None:
    (outcome,) = redeem(buyer, charge_line(provider, 100_000)).lines

    assert outcome.voucher_amount == 0
    assert [reason.code for reason in outcome.reasons] == ["no_active_voucher"]


def test_a_voucher_pays_only_for_the_usage_within_its_validity(buyer, provider) -> None:
    # Granted on 16 March: it pays for the second half of March only (16 of 31 days).
    voucher_factory(buyer=buyer, now=local(2026, 3, 16))

    (outcome,) = redeem(buyer, charge_line(provider, 310_000)).lines

    assert outcome.voucher_amount == 32_000  # 20% of 160,000


def test_a_voucher_pays_the_invoice_of_its_last_days_after_it_ended(buyer, provider) -> None:
    voucher_factory(buyer=buyer, valid_until=local(2026, 4, 1))

    (outcome,) = redeem(buyer, charge_line(provider, 100_000), at=local(2026, 4, 1) + LATE_INVOICE_GRACE / 2).lines

    assert outcome.voucher_amount == 20_000


def test_a_voucher_past_its_grace_pays_nothing(buyer, provider) -> None:
    voucher_factory(buyer=buyer, valid_until=local(2026, 4, 1))

    (outcome,) = redeem(buyer, charge_line(provider, 100_000), at=local(2026, 4, 1) + LATE_INVOICE_GRACE).lines

    assert outcome.voucher_amount == 0


def test_a_revoked_voucher_pays_nothing(buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer)
    voucher_revoke(voucher=voucher, by="test", now=GRANTED_AT)

    (outcome,) = redeem(buyer, charge_line(provider, 100_000)).lines

    assert outcome.voucher_amount == 0


def test_a_line_of_zero_needs_no_voucher_and_no_excuse(buyer, provider) -> None:
    voucher_factory(buyer=buyer)

    (outcome,) = redeem(buyer, charge_line(provider, 0)).lines

    assert (outcome.voucher_amount, outcome.reasons) == (0, ())


def test_the_yearly_cap_holds_across_the_issuers_programs(buyer, provider) -> None:
    issuer = IssuerFactory()
    first = voucher_factory(
        program_factory(issuer, per_company_yearly_cap=30_000), buyer, valid_until=local(2026, 6, 1)
    )
    voucher_factory(program_factory(issuer, per_company_yearly_cap=30_000), buyer)
    redeem(buyer, charge_line(provider, 100_000), invoice="first")  # 20,000 from the first voucher

    (outcome,) = redeem(buyer, charge_line(provider, 100_000), invoice="second").lines

    assert outcome.voucher_amount == 10_000
    assert [reason.code for reason in outcome.reasons] == ["yearly_cap_reached"]
    assert YearlyCapUsage.objects.get(buyer=buyer, issuer=issuer, year=2026).redeemed == 30_000
    assert fresh(first).remaining == first.face_value - 30_000


def test_another_issuers_voucher_is_not_held_by_the_first_issuers_cap(buyer, provider) -> None:
    voucher_factory(program_factory(per_company_yearly_cap=10_000), buyer, valid_until=local(2026, 6, 1))
    voucher_factory(program_factory(per_company_yearly_cap=10_000), buyer)

    assert redeem(buyer, charge_line(provider, 100_000)).total == 20_000


def test_the_yearly_cap_counts_by_the_year_the_usage_happened(buyer, provider) -> None:
    program = program_factory(per_company_yearly_cap=10_000, valid_until=local(2028, 1, 1))
    voucher_factory(program, buyer, valid_until=local(2028, 1, 1))
    december, january = (local(2026, 12, 1), local(2027, 1, 1)), (local(2027, 1, 1), local(2027, 2, 1))

    first = redeem(buyer, charge_line(provider, 100_000, period=december), invoice="dec", at=local(2027, 1, 2))
    second = redeem(buyer, charge_line(provider, 100_000, period=january), invoice="jan", at=local(2027, 2, 2))

    assert (first.total, second.total) == (10_000, 10_000)
    assert set(YearlyCapUsage.objects.values_list("year", "redeemed")) == {(2026, 10_000), (2027, 10_000)}


def test_redeeming_an_invoice_again_creates_nothing_and_answers_the_same(buyer, provider) -> None:
    program = program_factory()
    sooner = voucher_factory(program, buyer, face_value=25_000, valid_until=local(2026, 6, 1))
    later = voucher_factory(program, buyer)
    related = ProviderFactory(credit_code=buyer.credit_code)
    lines = [charge_line(provider, 100_000, ref="z"), charge_line(related, ref="b"), charge_line(provider, ref="a")]

    first = redeem(buyer, *lines)
    again = redeem(buyer, *lines, at=FINALIZED_AT + timedelta(hours=1))

    assert (again.lines, again.redemptions, again.total) == (first.lines, first.redemptions, first.total)
    assert [(r.line_ref, r.voucher_code) for r in again.redemptions] == [
        ("z", sooner.code),
        ("a", sooner.code),
        ("a", later.code),
    ]
    assert (first.replayed, again.replayed) == (False, True)
    assert (Redemption.objects.count(), Claim.objects.count()) == (3, 1)
    assert fresh(sooner).remaining + fresh(later).remaining == 25_000 + later.face_value - 40_000


def test_redeeming_an_invoice_again_with_other_lines_is_a_conflict(buyer, provider) -> None:
    voucher_factory(buyer=buyer)
    redeem(buyer, charge_line(provider, 100_000))

    with pytest.raises(ConflictError) as refused:
        redeem(buyer, charge_line(provider, 200_000))

    assert refused.value.code == "invoice_already_claimed"
    assert Redemption.objects.count() == 1


@pytest.mark.parametrize("problem", ["negative_amount", "duplicate_line_ref", "period_backwards", "unknown_provider"])
def test_malformed_lines_from_billing_are_a_bug_not_a_redemption(buyer, provider, problem) -> None:  # type: ignore[no-untyped-def]
    lines = {
        "negative_amount": [charge_line(provider, -1)],
        "duplicate_line_ref": [charge_line(provider, ref="same"), charge_line(provider, ref="same")],
        "period_backwards": [charge_line(provider, period=(APRIL[1], APRIL[0]))],
        "unknown_provider": [charge_line(BuyerFactory.build())],
    }[problem]

    with pytest.raises(ValueError):
        redeem(buyer, *lines)

    assert not Claim.objects.exists()
