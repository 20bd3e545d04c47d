"""A buyer's quote, of cards or of tokens, shows the price after its vouchers; nothing is redeemed."""

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.money import share, yuan_to_fen
from organizations.models import Organization
from pools.models import ModelEndpoint
from tests.factories import IssuerFactory, ProviderFactory, pool_factory
from tests.marketplace.test_tokens import MODEL, endpoint
from vouchers import services
from vouchers.issuing import VoucherRequest
from vouchers.models import Claim, Redemption, Voucher, VoucherProgram, YearlyCapUsage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen_clock")]  # quotes rate money

ORDER = {"gpu_model": "H100-80G", "cards": 8, "workload": "training", "duration_hours": "4"}


def give_voucher(
    buyer: Organization, *, face_value: int = 1_500_000, coverage_share: str = "0.2", **terms: Any
) -> Voucher:
    """A voucher of an open program; ``terms``: the program's hubs, GPU models, workloads, providers."""
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
        **terms,
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


# --- token quotes ----------------------------------------------------------------

TOKENS = {"model": MODEL, "input_tokens": 10_000_000, "output_tokens": 10_000_000}
REALTIME = {**TOKENS, "workload": "realtime", "user_region": "beijing"}


def token_placement(client: APIClient, body: dict[str, Any] = REALTIME) -> dict[str, Any]:
    response = client.post("/api/v1/token-quotes/", body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["placements"], response.json()
    return dict(response.json()["placements"][0])


def share_by_hand(cost: Decimal, coverage_share: str) -> Decimal:
    """The voucher's part of a cost in yuan: its share, rounded half up to the fen."""
    return (cost * Decimal(coverage_share)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def eligible_terms(served: ModelEndpoint) -> dict[str, Any]:
    """A program for exactly what a real-time token order on ``served`` bills: its provider, hub and
    GPU model, and the real-time inference its lease carries onto the invoice."""
    return {
        "hubs": [served.pool.hub_id],
        "gpu_models": [served.pool.gpu_model_id],
        "workloads": ["realtime_inference"],
        "providers": [served.pool.provider],
    }


def test_a_token_quote_shows_the_price_after_a_voucher_for_its_provider_hub_model_and_workload(
    buyer, buyer_client, provider
) -> None:
    served = endpoint(provider)
    give_voucher(buyer, coverage_share="0.2", **eligible_terms(served))

    quoted = token_placement(buyer_client)

    cost = Decimal(quoted["estimated_cost"])
    assert cost > Decimal("50.00")  # 10 million tokens each way at 2 and 8 yuan per million, times the band
    assert Decimal(quoted["estimated_cost_after_vouchers"]) == cost - share_by_hand(cost, "0.2")


def test_a_batch_token_quote_counts_as_batch_inference_for_vouchers(buyer, buyer_client, provider) -> None:
    served = endpoint(provider)
    give_voucher(buyer, coverage_share="0.4", **{**eligible_terms(served), "workloads": ["batch_inference"]})
    deadline = (timezone.now() + timedelta(hours=20)).isoformat()

    batch = token_placement(buyer_client, {**TOKENS, "workload": "batch", "deadline": deadline})
    realtime = token_placement(buyer_client)

    cost = Decimal(batch["estimated_cost"])
    assert Decimal(batch["estimated_cost_after_vouchers"]) == cost - share_by_hand(cost, "0.4")
    assert realtime["estimated_cost_after_vouchers"] == realtime["estimated_cost"]


def test_a_token_quote_after_vouchers_is_limited_by_what_the_voucher_has_left(buyer, buyer_client, provider) -> None:
    endpoint(provider)
    give_voucher(buyer, face_value=1_000, coverage_share="0.5")  # 10 yuan left, less than half the cost

    quoted = token_placement(buyer_client)

    assert Decimal(quoted["estimated_cost"]) > Decimal("20.00")
    assert Decimal(quoted["estimated_cost_after_vouchers"]) == Decimal(quoted["estimated_cost"]) - Decimal("10.00")


def test_without_vouchers_a_token_quotes_price_after_vouchers_is_its_price(buyer_client, provider) -> None:
    endpoint(provider)

    quoted = token_placement(buyer_client)

    assert quoted["estimated_cost_after_vouchers"] == quoted["estimated_cost"]


@pytest.mark.parametrize("term", ["hubs", "gpu_models", "workloads", "providers"])
def test_a_voucher_whose_program_excludes_the_endpoint_takes_nothing_off_a_token_quote(
    buyer, buyer_client, provider, term: str
) -> None:
    served = endpoint(provider)
    others = {
        "hubs": ["ningxia"],
        "gpu_models": ["A100-80G"],
        "workloads": ["training", "batch_inference"],
        "providers": [ProviderFactory()],
    }
    give_voucher(buyer, **{**eligible_terms(served), term: others[term]})

    quoted = token_placement(buyer_client)

    assert quoted["estimated_cost_after_vouchers"] == quoted["estimated_cost"]


def test_a_revoked_voucher_takes_nothing_off_a_token_quote(buyer, buyer_client, provider) -> None:
    endpoint(provider)
    services.voucher_revoke(voucher=give_voucher(buyer), by="issuer")

    quoted = token_placement(buyer_client)

    assert quoted["estimated_cost_after_vouchers"] == quoted["estimated_cost"]


def test_a_token_quote_reserves_nothing_of_the_voucher(buyer, buyer_client, provider) -> None:
    endpoint(provider)
    voucher = give_voucher(buyer, coverage_share="0.5")
    committed = VoucherProgram.objects.get(pk=voucher.program_id).committed

    quoted = token_placement(buyer_client)

    assert Decimal(quoted["estimated_cost_after_vouchers"]) < Decimal(quoted["estimated_cost"])
    voucher.refresh_from_db()
    assert voucher.remaining == voucher.face_value
    assert VoucherProgram.objects.get(pk=voucher.program_id).committed == committed
    assert not Claim.objects.exists()
    assert not Redemption.objects.exists()
    assert not YearlyCapUsage.objects.exists()
