"""Voucher value, yearly caps and program budgets hold under real concurrent transactions."""

from collections.abc import Callable

import pytest

from core.exceptions import ConflictError, RuleViolation
from tests.factories import BuyerFactory, IssuerFactory, ProviderFactory
from tests.threads import run_concurrently
from tests.vouchers.factories import GRANTED_AT, charge_line, fresh, local, program_factory, redeem, voucher_factory
from vouchers.issuing import VoucherRequest
from vouchers.models import Claim, Redemption, VoucherProgram, YearlyCapUsage
from vouchers.services import voucher_revoke, vouchers_issue

THREADS = 20


@pytest.mark.django_db(transaction=True)
def test_100_concurrent_redemptions_of_one_voucher_never_pay_more_than_its_value() -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    voucher = voucher_factory(program_factory(coverage_share="0.5"), buyer, face_value=10_000)
    paid: list[int] = []

    def invoice(number: int) -> Callable[[], None]:
        return lambda: paid.append(redeem(buyer, charge_line(provider, 1_000), invoice=f"invoice-{number}").total)

    run_concurrently([invoice(number) for number in range(100)])

    assert len(paid) == 100
    assert sum(paid) == 10_000
    assert sorted(paid, reverse=True)[:21] == [500] * 20 + [0]
    assert sum(Redemption.objects.values_list("amount", flat=True)) == 10_000
    assert (fresh(voucher).remaining, fresh(voucher).status) == (0, "exhausted")


@pytest.mark.django_db(transaction=True)
def test_concurrent_invoices_of_one_company_never_pass_the_yearly_cap() -> None:
    buyer, provider, issuer = BuyerFactory(), ProviderFactory(), IssuerFactory()
    for _ in range(3):
        voucher_factory(program_factory(issuer, per_company_yearly_cap=30_000), buyer, face_value=1_000_000)
    paid: list[int] = []

    def invoice(number: int) -> Callable[[], None]:
        return lambda: paid.append(redeem(buyer, charge_line(provider, 100_000), invoice=f"invoice-{number}").total)

    run_concurrently([invoice(number) for number in range(40)])

    assert sum(paid) == 30_000
    assert YearlyCapUsage.objects.get(buyer=buyer, issuer=issuer, year=2026).redeemed == 30_000
    assert sum(Redemption.objects.values_list("amount", flat=True)) == 30_000


@pytest.mark.django_db(transaction=True)
def test_concurrent_issuing_never_passes_the_program_budget() -> None:
    program = program_factory(budget=10_000)
    buyers = [BuyerFactory() for _ in range(30)]
    issued: list[int] = []
    refused: list[str] = []

    def issue(buyer) -> Callable[[], None]:  # type: ignore[no-untyped-def]
        def job() -> None:
            try:
                vouchers_issue(
                    program=program, requests=[VoucherRequest(buyer, face_value=1_000)], by="test", now=GRANTED_AT
                )
                issued.append(1_000)
            except RuleViolation as exc:
                refused.append(exc.code)

        return job

    run_concurrently([issue(buyer) for buyer in buyers], threads=len(buyers))

    program.refresh_from_db()
    assert (len(issued), set(refused), len(refused)) == (10, {"budget_exceeded"}, 20)
    assert (program.committed, program.budget_left) == (10_000, 0)
    assert program.vouchers.count() == 10


@pytest.mark.django_db(transaction=True)
def test_the_same_invoice_redeemed_concurrently_pays_once() -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    voucher = voucher_factory(buyer=buyer)
    line = charge_line(provider, 100_000)
    answers: list[tuple[int, bool]] = []

    def job() -> None:
        result = redeem(buyer, line)
        answers.append((result.total, result.replayed))

    run_concurrently([job for _ in range(THREADS)])

    assert sorted(answers) == [(20_000, False)] + [(20_000, True)] * (THREADS - 1)
    assert (Claim.objects.count(), Redemption.objects.count()) == (1, 1)
    assert fresh(voucher).remaining == voucher.face_value - 20_000


@pytest.mark.django_db(transaction=True)
def test_a_revocation_racing_redemptions_keeps_every_fen_accounted_for() -> None:
    buyer, provider = BuyerFactory(), ProviderFactory()
    voucher = voucher_factory(program_factory(coverage_share="0.5"), buyer, face_value=10_000)
    outcomes: list[str] = []

    def invoice(number: int) -> Callable[[], None]:
        return lambda: outcomes.append(str(redeem(buyer, charge_line(provider, 600), invoice=f"i-{number}").total))

    def revoke() -> None:
        try:
            voucher_revoke(voucher=voucher, by="test", now=local(2026, 4, 2))
            outcomes.append("revoked")
        except ConflictError:
            outcomes.append("already ended")

    jobs = [invoice(number) for number in range(39)]
    jobs.insert(17, revoke)
    run_concurrently(jobs)

    voucher = fresh(voucher)
    redeemed = sum(Redemption.objects.values_list("amount", flat=True))
    assert voucher.status == "revoked"
    assert voucher.face_value == redeemed + voucher.released + voucher.remaining
    assert VoucherProgram.objects.get(pk=voucher.program_id).committed == redeemed
