"""A buyer's quote shows the price after its vouchers; nothing is redeemed."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core.money import share, yuan_to_fen
from tests.factories import IssuerFactory, ProviderFactory, pool_factory
from vouchers import services
from vouchers.issuing import VoucherRequest
from vouchers.models import Claim, Redemption, Voucher

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]  # quotes rate money

ORDER = {"gpu_model": "H100-80G", "cards": 8, "workload": "training", "duration_hours": "4"}


def give_voucher(buyer, *, face_value: int = 1_500_000, coverage_share: str = "0.2") -> Voucher:  # type: ignore[no-untyped-def]
    now = timezone.now()
    program = services.program_create(
        issuer=IssuerFactory(),
        name="Beijing compute voucher",
        budget=100_000_000,
        coverage_share=Decimal(coverage_share),
        per_company_yearly_cap=50_000_000,
        valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=365),
        by="test",
    )
    services.program_open(program=program, by="test")
    (voucher,) = services.vouchers_issue(
        program=program, requests=[VoucherRequest(organization=buyer, face_value=face_value)], by="test"
    )
    return voucher


def placement(client) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/quotes/", ORDER, format="json")
    assert response.status_code == 200, response.json()
    return response.json()["placements"][0]


def test_a_quote_shows_the_price_after_the_buyers_vouchers(buyer, buyer_client) -> None:
    pool_factory()
    give_voucher(buyer, coverage_share="0.2")

    quoted = placement(buyer_client)

    cost = Decimal(quoted["estimated_cost"])
    credit = share(yuan_to_fen(cost), Decimal("0.2"))[0]
    assert Decimal(quoted["estimated_cost_after_vouchers"]) == cost - Decimal(credit) / 100


def test_a_quote_after_vouchers_is_limited_by_what_the_voucher_has_left(buyer, buyer_client) -> None:
    pool_factory()
    give_voucher(buyer, face_value=1_000, coverage_share="0.5")

    quoted = placement(buyer_client)

    assert Decimal(quoted["estimated_cost_after_vouchers"]) == Decimal(quoted["estimated_cost"]) - Decimal("10.00")


def test_a_quote_redeems_nothing(buyer, buyer_client) -> None:
    pool_factory()
    voucher = give_voucher(buyer)

    placement(buyer_client)

    assert not Claim.objects.exists()
    assert not Redemption.objects.exists()
    voucher.refresh_from_db()
    assert voucher.remaining == voucher.face_value


def test_without_vouchers_the_price_after_vouchers_is_the_price(buyer_client) -> None:
    pool_factory()

    quoted = placement(buyer_client)

    assert quoted["estimated_cost_after_vouchers"] == quoted["estimated_cost"]


def test_a_quote_on_a_related_partys_pool_gets_no_voucher(buyer, buyer_client) -> None:
    pool_factory(provider=ProviderFactory(credit_code=buyer.credit_code))
    give_voucher(buyer)

    quoted = placement(buyer_client)

    assert quoted["estimated_cost_after_vouchers"] == quoted["estimated_cost"]
