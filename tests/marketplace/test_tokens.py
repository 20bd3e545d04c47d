"""The token market: endpoints, token offers and quotes, token orders billed per token."""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from billing.models import InvoiceLine
from billing.selectors import invoice_view
from billing.services.invoices import invoice_finalize
from billing.services.reconcile import reconcile
from billing.services.usage import usage_events_ingest, usage_rollup_buckets
from billing.token_electricity import (
    electricity_per_million_by_hub_and_hour,
    endpoint_hours,
    provider_electricity_per_million,
)
from core.money import round_to_fen, share
from core.timezones import local_zone
from marketplace.models import Lease
from marketplace.token_dispatch import REALTIME, TokenRequest, electricity_per_million
from marketplace.token_services import token_order_place
from pools.endpoints import endpoint_approve, endpoint_register
from pools.models import ModelEndpoint, ResourcePool
from pools.tariffs import hour_bands
from tests.billing.conftest import gpu_event, running_lease
from tests.billing.test_invoices import APRIL_5, march_invoice
from tests.factories import pool_factory
from tests.vouchers.factories import program_factory, voucher_factory

pytestmark = pytest.mark.django_db

MODEL = "deepseek-v3"
ORDERED = datetime(2026, 3, 10, 2, tzinfo=UTC)  # 10:00 in Shanghai: a peak hour in Beijing


def endpoint(provider: Any, *, hub: str = "jingjinji", province: str = "Beijing", **fields: Any) -> ModelEndpoint:
    """An approved endpoint of 4 cards at 2,000 tokens/s per card on a fresh pool of ``provider``."""
    pool = pool_factory(provider=provider, hub_id=hub, province=province, cards=16)
    made = endpoint_register(
        provider=provider,
        pool=pool,
        model=fields.get("model", MODEL),
        input_price=fields.get("input_price", Decimal("2.00")),
        output_price=fields.get("output_price", Decimal("8.00")),
        throughput_per_card=fields.get("throughput_per_card", 2000),
        cards=4,
        by="test",
    )
    return endpoint_approve(endpoint=made, by="operator")


def realtime(**fields: Any) -> TokenRequest:
    return TokenRequest(
        **{
            "model": MODEL,
            "input_tokens": 1000,
            "output_tokens": 1000,
            "workload": REALTIME,
            "user_region": "beijing",
            **fields,
        }
    )


def tokens_event(lease: Lease, event_id: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "agent://test/endpoint",
        "type": "compute.tokens",
        "subject": str(lease.pk),
        "time": at.isoformat(),
        "data": {"model": MODEL, "input_tokens": 3_000_000, "output_tokens": 1_000_000, **data},
    }


def ingest(lease: Lease, events: list[dict[str, Any]], now: datetime) -> Any:
    result = usage_events_ingest(provider_id=lease.provider_id, events=events, now=now)
    usage_rollup_buckets(buckets=[(lease.pk, datetime.fromtimestamp(hour * 3600, UTC)) for _, hour in result.buckets])
    return result


@pytest.fixture
def token_lease(buyer: Any, provider: Any) -> Lease:
    with time_machine.travel(ORDERED - timedelta(minutes=1), tick=False):
        endpoint(provider)
    with time_machine.travel(ORDERED, tick=False):
        order = token_order_place(buyer=buyer, request=realtime(), by="test")
    return order.leases.get()


def test_an_approved_endpoint_reserves_its_cards_so_no_card_lease_takes_them(provider) -> None:
    served = endpoint(provider)

    pool = ResourcePool.objects.get(pk=served.pool_id)
    assert (served.status, pool.reserved_cards, pool.free_cards) == ("active", 4, 12)


def test_an_endpoints_prices_are_a_price_version_of_its_pool_priced_by_band(provider) -> None:
    served = endpoint(provider)

    plan = served.pool.price_plans.order_by("-version").first()
    assert plan.token_prices[MODEL] == {"input": "2.00", "output": "8.00"}
    peak = plan.token_rate(MODEL, "output", "peak")
    valley = plan.token_rate(MODEL, "output", "valley")
    assert peak == (Decimal("8.00") * Decimal(plan.time_of_use["peak"])).quantize(Decimal("1e-10"))
    assert valley < Decimal("8.00") < peak


def test_token_offers_list_fresh_endpoints_with_electricity_per_million(provider, make_client, buyer) -> None:
    served = endpoint(provider)
    stale = endpoint(provider, hub="ningxia", province="Ningxia")
    ResourcePool.objects.filter(pk=stale.pool_id).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))

    body = make_client(buyer).get(f"/api/v1/token-offers/?model={MODEL}&user_region=beijing").json()

    assert [offer["endpoint"] for offer in body["results"]] == [str(served.pk)]
    offer = body["results"][0]
    assert offer["throughput"] == 8000
    assert Decimal(offer["electricity_cost_per_million_tokens"]) > 0


def test_a_realtime_quote_turns_down_endpoints_beyond_the_latency_bound(provider, make_client, buyer) -> None:
    near = endpoint(provider)
    far = endpoint(provider, hub="greater_bay", province="Guangdong")  # 24 ms from Beijing

    body = (
        make_client(buyer)
        .post(
            "/api/v1/token-quotes/",
            {
                "model": MODEL,
                "input_tokens": 1000,
                "output_tokens": 500,
                "workload": "realtime",
                "user_region": "beijing",
                "max_latency_ms": 10,
            },
            format="json",
        )
        .json()
    )

    assert [placement["endpoint"] for placement in body["placements"]] == [str(near.pk)]
    assert body["rejected"]["endpoints"] == [{"endpoint": str(far.pk), "reason": "latency"}]
    assert body["rejected"]["summary"][0]["message"] == "latency over 10 ms"


def test_a_batch_quote_waits_for_the_valley_hours_before_its_deadline(provider, make_client, buyer) -> None:
    with time_machine.travel(ORDERED - timedelta(minutes=1), tick=False):
        endpoint(provider)
    with time_machine.travel(ORDERED, tick=False):  # 10:00 Shanghai, peak
        deadline = ORDERED + timedelta(hours=20)
        body = (
            make_client(buyer)
            .post(
                "/api/v1/token-quotes/",
                {
                    "model": MODEL,
                    "input_tokens": 10**7,
                    "output_tokens": 10**7,
                    "workload": "batch",
                    "deadline": deadline.isoformat(),
                },
                format="json",
            )
            .json()
        )

    assert body["placements"], body
    placement = body["placements"][0]
    start, end = (datetime.fromisoformat(placement[at]).astimezone(local_zone()) for at in ("start_at", "end_at"))
    bands = hour_bands(ResourcePool.objects.get().hub.tariff)
    assert bands[start.hour] == bands[(end - timedelta(seconds=1)).hour] == "valley"  # Beijing: 23:00 to 07:00


def test_token_usage_is_billed_per_million_with_the_band_price_and_the_voucher_share(
    buyer, provider, issuer, token_lease
) -> None:
    program = program_factory(issuer, coverage_share="0.2", valid_until=datetime(2027, 1, 1, tzinfo=local_zone()))
    voucher_factory(program, buyer, face_value=10_000_000, now=ORDERED - timedelta(days=1))
    hour = ORDERED + timedelta(hours=1)  # 11:00 Shanghai, peak in Beijing
    result = ingest(
        token_lease, [tokens_event(token_lease, "t1", hour + timedelta(minutes=5))], hour + timedelta(minutes=30)
    )
    assert result.accepted == 1

    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    lines = {line.metric: line for line in invoice.lines.all()}
    assert set(lines) == {"input_tokens", "output_tokens"}
    plan = token_lease.pool.price_plans.order_by("-version").first()
    band = hour_bands(token_lease.pool.hub.tariff)[11]
    assert lines["output_tokens"].unit == InvoiceLine.Unit.MILLION_TOKENS
    assert lines["output_tokens"].amount == round_to_fen(plan.token_rate(MODEL, "output", band))  # 1 million
    assert lines["input_tokens"].amount == round_to_fen(3 * plan.token_rate(MODEL, "input", band))
    assert invoice.voucher_credit == sum(share(line.amount, Decimal("0.2"))[0] for line in lines.values()) > 0
    assert reconcile() == []
    # and each token line carries the electricity per million tokens of the hour it was served in:
    # 4 cards x 0.7 kW x PUE 1.2 x 1 h at 1.12 yuan/kWh (Beijing's peak) over the 4 million tokens
    shown = invoice_view(invoice).shown_lines
    rates = [float(line.electricity_cost_per_million_tokens) for line in shown]
    assert rates == pytest.approx([4 * 0.7 * 1.2 * 1.12 / 4] * 2)


def test_a_token_quote_takes_off_what_the_vouchers_then_pay_of_the_invoice(
    buyer, provider, issuer, make_client
) -> None:
    # given a program for real-time inference on this provider's endpoint alone (its hub and GPU model)
    with time_machine.travel(ORDERED - timedelta(minutes=1), tick=False):
        served = endpoint(provider)
    program = program_factory(
        issuer,
        coverage_share="0.2",
        valid_until=datetime(2027, 1, 1, tzinfo=local_zone()),
        hubs=[served.pool.hub_id],
        gpu_models=[served.pool.gpu_model_id],
        workloads=["realtime_inference"],
        providers=[provider],
    )
    voucher_factory(program, buyer, face_value=10_000_000, now=ORDERED - timedelta(days=1))
    body = {"model": MODEL, "input_tokens": 3_000_000, "output_tokens": 1_000_000, "workload": "realtime"}

    # when the buyer is quoted, orders those tokens, uses them and is invoiced
    with time_machine.travel(ORDERED, tick=False):
        response = make_client(buyer).post("/api/v1/token-quotes/", {**body, "user_region": "beijing"}, format="json")
        order = token_order_place(
            buyer=buyer, request=realtime(input_tokens=3_000_000, output_tokens=1_000_000), by="test"
        )
    lease = order.leases.get()
    hour = ORDERED + timedelta(hours=1)  # 11:00 Shanghai: peak in Beijing, as 10:00 is
    ingest(lease, [tokens_event(lease, "t1", hour + timedelta(minutes=5))], hour + timedelta(minutes=30))
    invoice = invoice_finalize(invoice_id=march_invoice(buyer).pk, now=APRIL_5)

    # then the quote took off the program's 20%, and the invoice's token lines got it (to the fen of rounding)
    quoted = response.json()["placements"][0]
    cost = Decimal(quoted["estimated_cost"])
    off = (cost * Decimal("0.2")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert Decimal(quoted["estimated_cost_after_vouchers"]) == cost - off > 0
    assert invoice.voucher_credit == sum(share(line.amount, Decimal("0.2"))[0] for line in invoice.lines.all()) > 0
    assert abs(Decimal(invoice.voucher_credit) / 100 - off) <= Decimal("0.02")


def test_the_same_token_event_twice_is_billed_once(token_lease) -> None:
    at = ORDERED + timedelta(minutes=20)
    event = tokens_event(token_lease, "t1", at)

    first = ingest(token_lease, [event], at + timedelta(minutes=1))
    second = ingest(token_lease, [event], at + timedelta(minutes=2))

    assert (first.accepted, second.accepted, second.duplicates) == (1, 0, 1)
    assert sum(r.quantity for r in token_lease.usage_rollups.all()) == 4_000_000


def test_tokens_beyond_the_endpoints_throughput_in_an_hour_are_refused(token_lease) -> None:
    # 4 cards x 2,000 tokens/s for the 40 minutes it ran by then: 19.2 million (a bit more with the skew allowance).
    at = ORDERED + timedelta(minutes=40)
    events = [tokens_event(token_lease, f"t{i}", ORDERED + timedelta(minutes=i)) for i in range(1, 9)]  # 32 million

    result = ingest(token_lease, events, at)

    assert result.accepted < 8
    assert {error["code"] for error in result.errors} == {"hourly_token_limit_exceeded"}
    assert sum(r.quantity for r in token_lease.usage_rollups.all()) <= 4 * 2000 * (40 * 60 + 300)


def test_tokens_on_a_card_lease_are_refused_so_nothing_is_billed_twice(buyer, provider) -> None:
    lease = running_lease(buyer=buyer, provider=provider)
    event = {
        **gpu_event(lease, "t1"),
        "type": "compute.tokens",
        "data": {"model": MODEL, "input_tokens": 5, "output_tokens": 5},
    }

    result = usage_events_ingest(provider_id=provider.pk, events=[event], now=timezone.now())

    assert [error["code"] for error in result.errors] == ["tokens_on_card_lease"]


def test_card_seconds_on_a_token_order_are_refused(token_lease) -> None:
    event = {**gpu_event(token_lease, "g1"), "time": (ORDERED + timedelta(minutes=5)).isoformat()}

    result = usage_events_ingest(
        provider_id=token_lease.provider_id, events=[event], now=ORDERED + timedelta(minutes=10)
    )

    assert [error["code"] for error in result.errors] == ["card_seconds_on_token_order"]


def test_electricity_per_million_tokens_matches_a_plain_computation() -> None:
    # 700 W x PUE 1.3 for an hour at 0.28 yuan/kWh, over 2,000 tokens/s x 3,600 s.
    plain = 0.7 * 1.3 * 0.28 / (2000 * 3600) * 1_000_000

    assert electricity_per_million(power_watts=700, pue=1.3, kwh_price=0.28, throughput_per_card=2000) == pytest.approx(
        plain
    )


def test_each_endpoint_hours_electricity_per_token_matches_a_plain_computation(token_lease) -> None:
    # given 4 million tokens served in the 11:00 (Shanghai) hour of a 4-card H100 endpoint in Beijing
    hour = ORDERED + timedelta(hours=1)
    ingest(token_lease, [tokens_event(token_lease, "t1", hour + timedelta(minutes=5))], hour + timedelta(minutes=30))

    (row,) = endpoint_hours(since=ORDERED, until=ORDERED + timedelta(hours=3))

    # then energy = 4 cards x 0.7 kW x PUE 1.2 x 1 h at Beijing's peak price (1.12 yuan/kWh), over 4e6 tokens
    assert (row.hour, row.tokens) == (hour, 4_000_000)
    plain = 4 * 700 / 1000 * 1.2 * 1.12 / 4_000_000 * 1_000_000
    assert float(row.per_million_tokens) == pytest.approx(plain)
    (chart,) = electricity_per_million_by_hub_and_hour(since=ORDERED, until=ORDERED + timedelta(hours=3))
    assert (chart["hub"], float(chart["per_million_tokens"])) == ("jingjinji", pytest.approx(plain))
    statement = provider_electricity_per_million(
        provider_id=token_lease.provider_id, since=ORDERED, until=ORDERED + timedelta(hours=3)
    )
    assert float(statement) == pytest.approx(plain)


def lease_start_if_due(lease: Lease) -> None:
    from marketplace.services import lease_start

    lease.refresh_from_db()
    if lease.status == Lease.Status.SCHEDULED:
        lease_start(lease_id=lease.pk, by="test", now=lease.start_at)
    lease.refresh_from_db()


def snapshot(endpoint_id: str, hub: str, region: str, kwh: tuple[float, float], latency: dict[str, int]) -> Any:
    """An endpoint of 100 cards at 2,000 tokens/s, its prices following its tariff (peak 10-22 local)."""
    from marketplace.token_dispatch import EndpointSnapshot, curves

    tariff = [kwh[1] if 10 <= hour < 22 else kwh[0] for hour in range(24)]
    prices_in = [2 * price / kwh[1] for price in tariff]
    prices_out = [8 * price / kwh[1] for price in tariff]
    return EndpointSnapshot(
        endpoint_id, endpoint_id, "p", hub, region, MODEL, 100, 2000, 700, 1.2, 0.5,
        prices_in, prices_out, tariff, latency, curves(prices_in, prices_out, tariff), False,
    )  # fmt: skip


def test_the_token_simulation_cuts_electricity_per_token_with_no_latency_violation() -> None:
    from marketplace.token_simulation import simulate_tokens

    east = snapshot("east", "jingjinji", "east", (0.3, 1.1), {region: 5 for region in ("beijing", "shanghai")})
    west = snapshot("west", "ningxia", "west", (0.18, 0.5), {region: 25 for region in ("beijing", "shanghai")})
    day = datetime(2026, 3, 10, tzinfo=local_zone())

    grid, baseline = simulate_tokens(endpoints=[east, west], day=day, seed=1, jobs=300)

    assert grid.latency_violations == 0
    assert grid.per_million(grid.electricity_cost) < 0.82 * baseline.per_million(baseline.electricity_cost)
    assert grid.west_tokens > 0 and baseline.west_tokens == 0


def test_a_batch_token_job_bills_no_more_tokens_than_it_was_ordered_for(buyer, provider) -> None:
    # given a batch job ordered for 8 million tokens (6 in, 2 out), due in 20 hours
    with time_machine.travel(ORDERED - timedelta(minutes=1), tick=False):
        endpoint(provider)
    job = TokenRequest(
        model=MODEL,
        input_tokens=6_000_000,
        output_tokens=2_000_000,
        workload="batch",
        deadline=ORDERED + timedelta(hours=20),
    )
    with time_machine.travel(ORDERED, tick=False):
        lease = token_order_place(buyer=buyer, request=job, by="test").leases.get()
    with time_machine.travel(lease.start_at, tick=False):
        lease_start_if_due(lease)
    at = lease.start_at + timedelta(minutes=40)  # within what its 4 cards serve in the hour so far

    # when its provider reports three events of 4 million tokens
    result = ingest(
        lease, [tokens_event(lease, f"t{i}", at + timedelta(minutes=i)) for i in range(3)], at + timedelta(minutes=20)
    )

    # then two are billed, the third is refused
    assert (result.accepted, [error["code"] for error in result.errors]) == (2, ["token_budget_exceeded"])


def test_a_provider_publishes_an_endpoint_an_operator_approves_it_and_its_prices_change_by_version(
    provider, operator, make_client
) -> None:
    pool = pool_factory(provider=provider, cards=16)
    body = {
        "pool": str(pool.pk),
        "model": "glm-4.5",
        "input_price": "2.00",
        "output_price": "8.00",
        "throughput_per_card": 2000,
        "cards": 8,
    }
    later = timezone.now() + timedelta(seconds=1)
    with time_machine.travel(later - timedelta(seconds=1), tick=False):
        created = make_client(provider).post("/api/v1/endpoints/", body, format="json")
    with time_machine.travel(later, tick=False):
        approved = make_client(operator).post(f"/api/v1/endpoints/{created.json()['id']}/approve/", {}, format="json")
        repriced = make_client(provider).patch(
            f"/api/v1/endpoints/{created.json()['id']}/",
            {"input_price": "1.50", "output_price": "6.00"},
            format="json",
        )

    assert (created.status_code, created.json()["status"]) == (201, "pending")
    assert (approved.status_code, approved.json()["status"]) == (200, "active")
    assert ResourcePool.objects.get(pk=pool.pk).reserved_cards == 8
    assert repriced.json()["prices"] == {"input": "1.5000", "output": "6.0000"}
    assert repriced.json()["price_version"] == created.json()["price_version"] + 1


def test_an_endpoint_cannot_claim_more_throughput_than_its_cards_can_process(provider, make_client) -> None:
    pool = pool_factory(provider=provider, cards=16)  # H100: at most 494,700 tokens per second

    answer = make_client(provider).post(
        "/api/v1/endpoints/",
        {
            "pool": str(pool.pk),
            "model": "m",
            "input_price": "1",
            "output_price": "1",
            "throughput_per_card": 600_000,
            "cards": 1,
        },
        format="json",
    )

    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "throughput_implausible")
    assert not ModelEndpoint.objects.exists()


def test_a_token_account_is_not_extended_and_its_lock_ends_when_its_version_reaches_running_leases(
    token_lease, buyer, make_client
) -> None:
    end_at = token_lease.end_at

    with time_machine.travel(ORDERED + timedelta(hours=1), tick=False):
        response = make_client(buyer).patch(
            f"/api/v1/leases/{token_lease.pk}/", {"end_at": (end_at + timedelta(days=1)).isoformat()}, format="json"
        )

    assert (response.status_code, response.json()["error"]["code"]) == (422, "lease_not_extendable")
    token_lease.refresh_from_db()
    assert token_lease.end_at == end_at
    # a pay-as-you-go account books no hours: its lock ends at its opening, or when the version it
    # opened on (a new endpoint's token prices, a rise) reaches running leases after its notice
    assert token_lease.price_locked_until == max(token_lease.start_at, token_lease.price_plan.running_from)
