"""Replay a day of token demand on the national endpoints: the token dispatcher against a naive baseline.

Demand: real-time chat from the east's user regions on the daily curve of the
card simulation, and batch token jobs (script generation, document processing)
with deadlines, 3 tokens of real-time work to 1 of batch. Both policies place
the same jobs on the same endpoints in memory (nothing is written), each
endpoint serving at most its cards x throughput per card in an hour.

The baseline is what a buyer without a grid does: the nearest east endpoint of
the model to its users, with throughput left, at once.
"""

import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from marketplace.simulation import DAILY_CURVE, EAST_REGIONS
from marketplace.token_dispatch import (
    BATCH,
    REALTIME,
    EndpointSnapshot,
    TokenPlacement,
    TokenRequest,
    token_dispatch,
)

# Job sizes in tokens: a region's chat traffic for a few minutes, and a batch job of documents or scripts.
REALTIME_TOKENS = (20_000_000, 50_000_000, 100_000_000)
BATCH_TOKENS = (1_000_000_000, 2_000_000_000, 5_000_000_000)
# 3:1 real-time to batch by tokens: 3 x mean(batch) / mean(real-time) real-time jobs per batch job.
BATCH_JOB_SHARE = 1 / (1 + 3 * (sum(BATCH_TOKENS) / len(BATCH_TOKENS)) / (sum(REALTIME_TOKENS) / len(REALTIME_TOKENS)))
# Share of input tokens: a chat's prompts and history; a document job reads far more than it writes.
REALTIME_INPUT_SHARE, BATCH_INPUT_SHARE = 0.7, 0.8
# A chat's network round-trip bound, ms: a token streams at 20-50 per second, so tens of ms go unseen.
CHAT_LATENCY_MS = (15, 20, 30)


@dataclass(frozen=True)
class TokenJob:
    at: datetime
    request: TokenRequest
    home_region: str


@dataclass
class TokenPolicyResult:
    name: str
    placed: int = 0
    unplaced: int = 0
    tokens: float = 0.0
    buyer_cost: float = 0.0
    electricity_cost: float = 0.0
    west_tokens: float = 0.0
    latency_violations: int = 0
    placement_ms: list[float] = field(default_factory=list)

    def per_million(self, amount: float) -> float:
        return amount / self.tokens * 1_000_000 if self.tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.placement_ms)
        return {
            "policy": self.name,
            "jobs_placed": self.placed,
            "jobs_unplaced": self.unplaced,
            "million_tokens": round(self.tokens / 1_000_000, 1),
            "buyer_cost_per_million": round(self.per_million(self.buyer_cost), 4),
            "electricity_per_million": round(self.per_million(self.electricity_cost), 4),
            "west_share": round(self.west_tokens / self.tokens, 4) if self.tokens else 0.0,
            "latency_violations": self.latency_violations,
            "placement_ms_median": round(statistics.median(ordered), 3) if ordered else 0.0,
            "placement_ms_p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3) if ordered else 0.0,
        }


def generate_token_jobs(*, day: datetime, seed: int, jobs: int, models: Sequence[str]) -> list[TokenJob]:
    """A day of token demand from local midnight ``day`` for ``models``."""
    rng = random.Random(seed)  # noqa: S311 - simulated demand, not secrets
    result = []
    for _ in range(jobs):
        region, model = rng.choice(EAST_REGIONS), rng.choice(models)
        if rng.random() >= BATCH_JOB_SHARE:
            tokens, share = rng.choice(REALTIME_TOKENS), REALTIME_INPUT_SHARE
            at = day + timedelta(hours=rng.choices(range(24), weights=DAILY_CURVE)[0], minutes=rng.randrange(60))
            extra: dict[str, Any] = {
                "workload": REALTIME,
                "user_region": region,
                "max_latency_ms": rng.choice(CHAT_LATENCY_MS),
            }
        else:
            tokens, share = rng.choice(BATCH_TOKENS), BATCH_INPUT_SHARE
            at = day + timedelta(hours=rng.randrange(24), minutes=rng.randrange(60))
            extra = {"workload": BATCH, "deadline": at + timedelta(hours=rng.choice((12, 18, 24)))}
        inputs = int(tokens * share)
        request = TokenRequest(model=model, input_tokens=inputs, output_tokens=tokens - inputs, **extra)
        result.append(TokenJob(at=at, request=request, home_region=region))
    result.sort(key=lambda job: job.at)
    return result


class _Throughput:
    """Tokens each endpoint has taken in each hour (hours since the day's local midnight)."""

    def __init__(self, reference: datetime) -> None:
        self.reference = reference
        self.used: dict[tuple[Any, int], float] = defaultdict(float)

    def _spread(self, endpoint: EndpointSnapshot, start: float, hours: float) -> list[tuple[int, float]]:
        """The share of a run's tokens in each hour it touches."""
        parts, end = [], start + hours
        for hour in range(math.floor(start), math.ceil(end)):
            overlap = min(end, hour + 1) - max(start, hour)
            if overlap > 0:
                parts.append((hour, overlap / hours))
        return parts

    def busy(self, tokens: int) -> Callable[[EndpointSnapshot, float, float], bool]:
        def check(endpoint: EndpointSnapshot, start: float, hours: float) -> bool:
            return any(
                self.used[(endpoint.id, hour)] + tokens * part > endpoint.tokens_per_hour
                for hour, part in self._spread(endpoint, start, hours)
            )

        return check

    def take(self, endpoint: EndpointSnapshot, placement: TokenPlacement, tokens: int) -> None:
        start = (placement.start_at - self.reference).total_seconds() / 3600
        hours = (placement.end_at - placement.start_at).total_seconds() / 3600
        for hour, part in self._spread(endpoint, start, hours):
            self.used[(endpoint.id, hour)] += tokens * part


Policy = Callable[[TokenJob, _Throughput], TokenPlacement | None]


def run_token_policy(
    name: str, policy: Policy, jobs: Sequence[TokenJob], endpoints: dict[Any, EndpointSnapshot], day: datetime
) -> TokenPolicyResult:
    result, throughput = TokenPolicyResult(name=name), _Throughput(day)
    for job in jobs:
        started = time.perf_counter()
        placement = policy(job, throughput)
        result.placement_ms.append((time.perf_counter() - started) * 1000)
        if placement is None:
            result.unplaced += 1
            continue
        endpoint = endpoints[placement.endpoint_id]
        throughput.take(endpoint, placement, job.request.tokens)
        result.placed += 1
        result.tokens += job.request.tokens
        result.buyer_cost += placement.estimated_cost
        result.electricity_cost += placement.electricity_cost
        if endpoint.region == "west":
            result.west_tokens += job.request.tokens
        if job.request.workload == REALTIME and (
            placement.latency_ms is None or placement.latency_ms > job.request.latency_bound
        ):
            result.latency_violations += 1
    return result


def simulate_tokens(
    *, endpoints: Sequence[EndpointSnapshot], day: datetime, seed: int, jobs: int
) -> tuple[TokenPolicyResult, TokenPolicyResult]:
    """The dispatcher and the baseline on the same day of token jobs."""
    by_id = {endpoint.id: endpoint for endpoint in endpoints}
    by_model: dict[str, list[EndpointSnapshot]] = defaultdict(list)
    for endpoint in endpoints:
        by_model[endpoint.model].append(endpoint)
    demand = generate_token_jobs(day=day, seed=seed, jobs=jobs, models=sorted(by_model))

    def grid(job: TokenJob, throughput: _Throughput) -> TokenPlacement | None:
        ranked = token_dispatch(
            job.request, by_model[job.request.model], job.at, busy=throughput.busy(job.request.tokens)
        )
        return ranked.placements[0] if ranked.placements else None

    def baseline(job: TokenJob, throughput: _Throughput) -> TokenPlacement | None:
        east = [endpoint for endpoint in by_model[job.request.model] if endpoint.region == "east"]
        east.sort(key=lambda endpoint: (endpoint.latency_ms.get(job.home_region, 999), str(endpoint.id)))
        # At once, wherever it is: the request as real-time work from the buyer's users, with no bound.
        now = TokenRequest(
            model=job.request.model,
            input_tokens=job.request.input_tokens,
            output_tokens=job.request.output_tokens,
            workload=REALTIME,
            user_region=job.home_region,
            max_latency_ms=10_000,
        )
        busy = throughput.busy(job.request.tokens)
        for endpoint in east:
            placed = token_dispatch(now, [endpoint], job.at, busy=busy).placements
            if placed:
                return placed[0]
        return None

    return (
        run_token_policy("dispatcher", grid, demand, by_id, day),
        run_token_policy("baseline", baseline, demand, by_id, day),
    )
