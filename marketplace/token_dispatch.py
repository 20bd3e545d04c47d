"""The token dispatcher: (token request, endpoint snapshot, time) -> ranked placements.

A pure function, as ``marketplace.dispatch`` is for cards, and built on its
price curves. Real-time work runs now, on an endpoint within ``max_latency_ms``
of its users; batch work with a deadline runs for as long as the endpoint needs
for its tokens (its cards x throughput per card), from the start whose token
prices are lowest and that still ends by the deadline, and may go west. Each
endpoint turned down gets a reason. Floats rank; money is rated exactly elsewhere.
"""

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils.translation import gettext, gettext_lazy

from core.timezones import local_zone
from marketplace.dispatch import LATENCY_WEIGHT_PER_MS, MAX_PLACEMENTS, _cheapest_start, _curve, _hours_since

REALTIME = "realtime"
BATCH = "batch"
TOKENS_PER_MILLION = 1_000_000.0
# A real-time request without a bound of its own: a chat's network round trip budget.
DEFAULT_REALTIME_LATENCY_MS = 30

REASONS = {  # in the request's language when said
    "stale": gettext_lazy("no recent heartbeat"),
    "latency": gettext_lazy("latency over {max_latency_ms} ms"),
    "deadline": gettext_lazy("cannot process the tokens by the deadline"),
    "busy": gettext_lazy("no throughput left in the hours it would run"),
}


@dataclass(frozen=True, slots=True)
class EndpointSnapshot:
    id: Any
    pool_id: Any
    provider_id: Any
    hub: str
    region: str
    model: str
    cards: int
    throughput_per_card: int
    power_watts: int
    pue: float
    green_share: float
    input_prices: Sequence[float]  # per million input tokens, by local hour 0..23
    output_prices: Sequence[float]  # per million output tokens, by local hour 0..23
    tariff_kwh: Sequence[float]  # the hub's electricity price, yuan per kWh, by local hour
    latency_ms: Mapping[str, int]
    # The price curves of input_prices, output_prices and tariff_kwh (``marketplace.dispatch._curve``),
    # made once per price version rather than per quote.
    curves: tuple[Any, Any, Any]
    stale: bool

    @property
    def tokens_per_hour(self) -> float:
        return float(self.cards * self.throughput_per_card * 3600)

    def electricity_per_million(self, hour: int) -> float:
        """Electricity cost per million tokens served at full throughput in a local hour."""
        return electricity_per_million(
            power_watts=self.power_watts,
            pue=self.pue,
            kwh_price=self.tariff_kwh[hour],
            throughput_per_card=self.throughput_per_card,
        )


def electricity_per_million(*, power_watts: float, pue: float, kwh_price: float, throughput_per_card: float) -> float:
    """One card's energy in an hour (power x PUE) at the hour's tariff, over the million tokens it serves."""
    return power_watts / 1000.0 * pue * kwh_price / (throughput_per_card * 3600.0) * TOKENS_PER_MILLION


@dataclass(frozen=True)
class TokenRequest:
    model: str
    input_tokens: int
    output_tokens: int
    workload: str  # realtime or batch
    user_region: str | None = None
    max_latency_ms: int | None = None
    deadline: datetime | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def latency_bound(self) -> int:
        return self.max_latency_ms if self.max_latency_ms is not None else DEFAULT_REALTIME_LATENCY_MS


@dataclass(frozen=True)
class TokenPlacement:
    endpoint_id: Any
    pool_id: Any  # the endpoint's pool: its provider, hub and GPU model are what vouchers look at
    hub: str
    region: str
    start_at: datetime
    end_at: datetime
    estimated_cost: float
    electricity_cost: float
    latency_ms: int | None
    score: float


@dataclass
class TokenDispatchResult:
    placements: list[TokenPlacement]
    rejections: dict[Any, str] = field(default_factory=dict)

    def summary(self, request: TokenRequest) -> list[dict[str, Any]]:
        counts = Counter(self.rejections.values())
        return [
            {"reason": reason, "message": reason_message(reason, request), "endpoints": count}
            for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ]

    def summary_text(self, request: TokenRequest) -> str:
        parts = [
            gettext("%(endpoints)s endpoints: %(reason)s") % {"endpoints": row["endpoints"], "reason": row["message"]}
            for row in self.summary(request)
        ]
        return "; ".join(parts) if parts else gettext("no endpoint serves %(model)s") % {"model": request.model}


def reason_message(reason: str, request: TokenRequest) -> str:
    return str(REASONS[reason]).format(max_latency_ms=request.latency_bound)


def _run_hours(endpoint: EndpointSnapshot, request: TokenRequest) -> float:
    return request.tokens / endpoint.tokens_per_hour


def curves(
    input_prices: Sequence[float], output_prices: Sequence[float], tariff_kwh: Sequence[float]
) -> tuple[Any, Any, Any]:
    return _curve(tuple(input_prices)), _curve(tuple(output_prices)), _curve(tuple(tariff_kwh))


def _cost(endpoint: EndpointSnapshot, request: TokenRequest, start: float, hours: float) -> tuple[float, float]:
    """The buyer's cost and the electricity cost of the request's tokens spread evenly from ``start``."""
    inputs, outputs, tariff = endpoint.curves
    cost = (
        request.input_tokens * inputs.between(start, hours) + request.output_tokens * outputs.between(start, hours)
    ) / (hours * TOKENS_PER_MILLION)
    card_hours = request.tokens / (endpoint.throughput_per_card * 3600.0)
    electricity = card_hours * endpoint.power_watts / 1000.0 * endpoint.pue * tariff.between(start, hours) / hours
    return cost, electricity


def _cheapest(endpoint: EndpointSnapshot, request: TokenRequest, earliest: float, latest: float, hours: float) -> float:
    """The cheapest start. Input and output prices are one base price each times the same band
    factors (``PricePlan.token_rate``), so any mix of them is cheapest where either is."""
    inputs, outputs, _ = endpoint.curves
    return _cheapest_start(inputs if request.input_tokens else outputs, earliest, latest, hours)


def token_dispatch(
    request: TokenRequest,
    endpoints: Iterable[EndpointSnapshot],
    now: datetime,
    *,
    busy: Callable[[EndpointSnapshot, float, float], bool] | None = None,
) -> TokenDispatchResult:
    """Rank the endpoints of ``request.model`` that can take it at ``now``; nothing is reserved.
    ``busy(endpoint, start, hours)`` (hours since local midnight) may say an endpoint has no
    throughput left then (the simulation tracks it)."""
    reference = now.astimezone(local_zone()).replace(hour=0, minute=0, second=0, microsecond=0)
    earliest = _hours_since(reference, now)
    result = TokenDispatchResult(placements=[])
    ranked: list[tuple[float, float, str, TokenPlacement]] = []
    for endpoint in endpoints:
        if endpoint.model != request.model:
            continue
        reason, placement = _place(endpoint, request, reference, earliest, busy)
        if reason is not None:
            result.rejections[endpoint.id] = reason
        elif placement is not None:
            ranked.append((placement.score, placement.start_at.timestamp(), str(endpoint.id), placement))
    result.placements = [row[3] for row in heapq.nsmallest(MAX_PLACEMENTS, ranked, key=lambda row: row[:3])]
    return result


def _place(
    endpoint: EndpointSnapshot,
    request: TokenRequest,
    reference: datetime,
    earliest: float,
    busy: Callable[[EndpointSnapshot, float, float], bool] | None,
) -> tuple[str | None, TokenPlacement | None]:
    if endpoint.stale:
        return "stale", None
    latency = endpoint.latency_ms.get(request.user_region or "")
    hours = max(_run_hours(endpoint, request), 1 / 3600)
    if request.workload == REALTIME:
        if latency is None or latency > request.latency_bound:
            return "latency", None
        start = earliest
    else:
        if request.deadline is None:
            start = earliest
        else:
            latest = _hours_since(reference, request.deadline) - hours
            if latest < earliest:
                return "deadline", None
            start = _cheapest(endpoint, request, earliest, latest, hours)
    if busy is not None and busy(endpoint, start, hours):
        return "busy", None
    cost, electricity = _cost(endpoint, request, start, hours)
    weight = 1 + LATENCY_WEIGHT_PER_MS * (latency or 0) if request.workload == REALTIME else 1.0
    start_at = reference + timedelta(hours=start)
    return None, TokenPlacement(
        endpoint_id=endpoint.id,
        pool_id=endpoint.pool_id,
        hub=endpoint.hub,
        region=endpoint.region,
        start_at=start_at,
        end_at=start_at + timedelta(hours=hours),
        estimated_cost=cost,
        electricity_cost=electricity,
        latency_ms=latency,
        score=cost * weight,
    )
