from datetime import UTC, datetime
from typing import Any

import pytest

from billing.models import Invoice
from billing.services.invoices import invoice_finalize
from billing.services.payments import bank_transfer_record
from core.timezones import local_zone
from settlements.services.accounts import payout_account_set
from tests.billing.factories import leased, usage
from tests.billing.test_invoices import APRIL_5, SETUP, march_invoice, shanghai
from tests.vouchers.factories import program_factory, voucher_factory

MAY_20 = datetime(2026, 5, 20, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _money_at_a_fixed_moment(frozen_clock: Any, settings: Any) -> None:
    settings.PAYOUT_RESERVE_RATE = 0
    settings.PAYOUT_MINIMUM_FEN = 100


@pytest.fixture
def account(provider: Any) -> Any:
    return payout_account_set(
        provider=provider,
        account_name=provider.legal_name,
        bank_name="Bank of China",
        branch="Beijing Haidian",
        account_number="6222020200112233",
        by="test",
    )


@pytest.fixture
def paid_march(buyer: Any, provider: Any, issuer: Any) -> Invoice:
    """March: 10 days of 8 cards for 8 hours, a voucher paying 20%, finalized on April 5 and paid by transfer."""
    program = program_factory(issuer, coverage_share="0.2", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    voucher_factory(program, buyer, face_value=10_000_000)
    lease = leased(buyer=buyer, provider=provider, at=SETUP)
    for day in range(1, 11):
        usage(lease, shanghai(day, 12), seconds=8 * 3600)
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)
    assert invoice.voucher_credit > 0
    return bank_transfer_record(invoice=invoice, amount=invoice.amount_due, by="operator", now=APRIL_5)
