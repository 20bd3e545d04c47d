"""The load test's clients (locust), started by ``bench/load.py``, which prepares the keys.

Each user is a buyer with a key of its own, and plays the buyer and the providers of its leases:
it reads offers, asks for quotes, places orders, has each new lease started by the provider of its
pool, sends that provider's CloudEvents usage batches for its running leases (now and then the same
batch again, as an agent retrying), and reads its invoices. No think time: every user sends its next
request as soon as the last one is answered.

A 5xx is a failure; a 4xx is counted per endpoint and status but is an answer, not a failure. At the
end it writes per-endpoint statistics, the statuses and the usage events accepted to ``LOAD_RESULTS``.
"""

import itertools
import json
import os
import random
import threading
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from locust import HttpUser, events, task
from locust.env import Environment

SETUP = json.loads(open(os.environ["LOAD_SETUP"]).read())  # noqa: SIM115
BATCH_EVENTS = int(os.environ.get("LOAD_BATCH_EVENTS", "100"))
BATCH = "application/cloudevents-batch+json"
ORDER = {"gpu_model": "910B", "cards": 8, "workload": "training", "duration_hours": "6"}
OFFER_QUERIES = [
    "?region=west&ordering=price",
    "?region=east&user_region=shanghai&ordering=latency",
    "?gpu_model=H100-80G&ordering=price",
    "?min_free_cards=64&ordering=-green_share",
    "?hub=jingjinji",
]

buyer_keys = itertools.cycle(SETUP["buyer_keys"])
statuses: dict[str, Counter[int]] = defaultdict(Counter)
accepted = Counter[str]()
lock = threading.Lock()


class Buyer(HttpUser):
    def on_start(self) -> None:
        self.key = next(buyer_keys)
        self.user = uuid.uuid4().hex[:8]
        self.leases: list[dict[str, Any]] = []  # running: id, provider key, cards, started
        self.invoices: list[str] = []
        self.sent = 0
        self.last_batch: tuple[str, bytes] | None = None
        self.place_order()

    def call(self, method: str, path: str, name: str, *, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}", **kwargs.pop("headers", {})}
        with self.client.request(method, path, name=name, headers=headers, catch_response=True, **kwargs) as answer:
            with lock:
                statuses[name][answer.status_code] += 1
            if answer.status_code >= 500 or answer.status_code == 0:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
                return None
            answer.success()
            return answer.json() if answer.status_code < 300 and answer.content else None

    @task(3)
    def offers(self) -> None:
        self.call("GET", f"/api/v1/offers/{random.choice(OFFER_QUERIES)}", "GET /offers/")

    @task(3)
    def quote(self) -> None:
        self.call("POST", "/api/v1/quotes/", "POST /quotes/", json={**ORDER, "cards": random.choice([8, 16, 32])})

    @task(1)
    def place_order(self) -> None:
        order = self.call("POST", "/api/v1/orders/", "POST /orders/", json=ORDER)
        if not order or order.get("status") != "placed":
            return
        for lease in order["leases"]:
            provider_key = SETUP["provider_keys"][SETUP["pool_providers"][lease["pool"]]]
            started = self.call(
                "POST", f"/api/v1/leases/{lease['id']}/start/", "POST /leases/{id}/start/", key=provider_key
            )
            if started and started["status"] == "running":
                self.leases.append(
                    {
                        "id": lease["id"],
                        "key": provider_key,
                        "cards": lease["cards"],
                        "started": datetime.fromisoformat(started["started_at"].replace("Z", "+00:00")),
                    }
                )

    @task(4)
    def usage_batch(self) -> None:
        if not self.leases:
            return
        if self.last_batch and random.random() < 0.1:  # the agent did not hear the answer: the same batch again
            key, body = self.last_batch
        else:
            lease = random.choice(self.leases)
            now = datetime.now(UTC)
            span = max((now - lease["started"]).total_seconds(), 1)
            body = json.dumps(
                [
                    {
                        "specversion": "1.0",
                        "id": f"{self.user}-{self.sent + n}",
                        "source": f"agent://load/{lease['id']}",
                        "type": "compute.gpu_seconds",
                        "subject": lease["id"],
                        "time": (lease["started"] + timedelta(seconds=random.uniform(0, span))).isoformat(),
                        "data": {"quantity": 1, "cards": lease["cards"]},  # one card-second
                    }
                    for n in range(BATCH_EVENTS)
                ]
            ).encode()
            self.sent += BATCH_EVENTS
            key = lease["key"]
            self.last_batch = (key, body)
        answer = self.call(
            "POST", "/api/v1/usage-events/", "POST /usage-events/", key=key, data=body, headers={"Content-Type": BATCH}
        )
        if answer:
            with lock:
                accepted["accepted"] += answer["accepted"]
                accepted["duplicates"] += answer["duplicates"]
                accepted["rejected"] += answer["rejected"]

    @task(2)
    def invoices(self) -> None:
        if self.invoices and random.random() < 0.5:
            self.call("GET", f"/api/v1/invoices/{random.choice(self.invoices)}/", "GET /invoices/{id}/")
            return
        page = self.call("GET", "/api/v1/invoices/", "GET /invoices/")
        if page:
            self.invoices = [invoice["id"] for invoice in page["results"]]


@events.test_stop.add_listener
def write_results(environment: Environment, **_: Any) -> None:
    stats = environment.stats
    endpoints = {
        name: {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "rps": entry.total_rps,
            "p50": entry.get_response_time_percentile(0.5),
            "p99": entry.get_response_time_percentile(0.99),
            "max": entry.max_response_time,
        }
        for (name, _method), entry in stats.entries.items()
    }
    total = stats.total
    results = {
        "endpoints": endpoints,
        "total": {"requests": total.num_requests, "failures": total.num_failures, "rps": total.total_rps},
        "statuses": {name: dict(codes) for name, codes in statuses.items()},
        "usage": dict(accepted),
        "seconds": (total.last_request_timestamp or 0) - (total.start_time or 0),
    }
    with open(os.environ["LOAD_RESULTS"], "w") as out:
        json.dump(results, out, indent=1)
