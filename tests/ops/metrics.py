"""Scraping the service as Prometheus does, for the tests of /metrics."""

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...]]  # (name, sorted labels)

# Samples that only ever grow: counters, and a histogram's or summary's buckets, counts and sums.
GROWING = ("counter", "histogram", "summary")


class Scrape:
    """One scrape, parsed: every sample's value, and which samples only ever grow."""

    def __init__(self, text: str) -> None:
        self.values: dict[Sample, float] = {}
        self.growing: set[Sample] = set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                self.values[key] = sample.value
                if family.type in GROWING and not sample.name.endswith("_created"):
                    self.growing.add(key)

    def value(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def moved(self, since: "Scrape", name: str, **labels: str) -> float:
        """How much this sample grew since the ``since`` scrape."""
        return self.value(name, **labels) - since.value(name, **labels)


def request(
    url: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", **(headers or {})} if data is not None else dict(headers or {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, sent, method=method), timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(url: str, token: str) -> Scrape:
    status, body = request(url, headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    return Scrape(body.decode())


def went_backwards(earlier: Scrape, later: Scrape) -> list[str]:
    """The growing samples of ``earlier`` that ``later`` lost or shows lower."""
    return [
        f"{name}{dict(labels)}: {earlier.values[(name, labels)]} -> {later.values.get((name, labels))}"
        for name, labels in sorted(earlier.growing)
        if later.values.get((name, labels), -1.0) < earlier.values[(name, labels)]
    ]
