"""/metrics in one process: who may read it, what a failing collector does, when counters move."""

import os
import subprocess
import sys
from typing import Any
from uuid import uuid4

import pytest
from celery import current_app
from django.db import transaction
from django.test import Client
from prometheus_client import REGISTRY

from billing.services.usage import usage_events_ingest
from tests.billing.conftest import gpu_event, running_lease
from tests.conftest import REPO
from tests.factories import BuyerFactory, ProviderFactory
from tests.ops.metrics import Scrape

TOKEN = "operators-metrics-token-0123456789abcdef"


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.mark.django_db
def test_metrics_are_served_with_the_operators_bearer_token(token: str) -> None:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    scraped = Scrape(response.content.decode())
    assert scraped.value("grid_metrics_collector_up", collector="pools") == 1
    assert ("django_http_requests_total_by_method_total", (("method", "GET"),)) in scraped.values


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN])
def test_metrics_without_the_token_are_refused(token: str, authorization: str | None) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = Client().get("/metrics", **headers)  # type: ignore[arg-type]

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"grid_" not in response.content


@pytest.mark.django_db
def test_without_a_configured_token_metrics_are_refused_to_everyone(settings: Any) -> None:
    settings.METRICS_TOKEN = ""

    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content


@pytest.mark.django_db
def test_a_collector_that_fails_is_reported_down_and_the_others_are_still_served(token: str) -> None:
    original = current_app.conf.broker_url
    current_app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    finally:
        current_app.conf.broker_url = original

    assert response.status_code == 200
    scraped = Scrape(response.content.decode())
    assert scraped.value("grid_metrics_collector_up", collector="celery_queues") == 0
    assert scraped.value("grid_metrics_collector_up", collector="pools") == 1
    assert not any(name == "grid_celery_queue_length" for name, _ in scraped.values)


def _usage_counts() -> list[float | None]:
    return [
        REGISTRY.get_sample_value("grid_usage_events_total", {"outcome": outcome, "code": code})
        for outcome, code in (("accepted", ""), ("duplicate", ""), ("rejected", "unknown_lease"))
    ]


@pytest.mark.django_db
def test_a_batch_is_counted_once_it_commits(django_capture_on_commit_callbacks: Any) -> None:
    provider = ProviderFactory()
    lease = running_lease(buyer=BuyerFactory(), provider=provider)
    event = gpu_event(lease, "evt-1")
    usage_events_ingest(provider_id=provider.pk, events=[event])
    before = [value or 0 for value in _usage_counts()]

    with django_capture_on_commit_callbacks(execute=True):
        batch = [gpu_event(lease, "evt-2"), event, gpu_event(lease, "evt-3", subject=str(uuid4()))]
        usage_events_ingest(provider_id=provider.pk, events=batch)

    after = _usage_counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]  # type: ignore[operator]


@pytest.mark.django_db
def test_a_batch_rolled_back_is_not_counted(django_capture_on_commit_callbacks: Any) -> None:
    provider = ProviderFactory()
    lease = running_lease(buyer=BuyerFactory(), provider=provider)
    before = _usage_counts()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        usage_events_ingest(provider_id=provider.pk, events=[gpu_event(lease, "evt-1")])
        raise RuntimeError("the caller's transaction fails")

    assert _usage_counts() == before


def _start(settings_module: str = "config.settings.production", **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "METRICS_TOKEN", "PROMETHEUS_MULTIPROC_DIR"}}
    env.update({"DJANGO_SETTINGS_MODULE": settings_module, "SECRET_KEY": "k" * 50, **environment})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_worker_serving_metrics_refuses_to_start_without_a_directory_for_its_pool() -> None:
    result = _start("config.settings.test", METRICS_WORKER_PORT="9540")

    assert result.returncode != 0
    assert "METRICS_WORKER_PORT needs PROMETHEUS_MULTIPROC_DIR" in result.stderr


def test_production_refuses_to_start_without_a_metrics_token() -> None:
    result = _start()

    assert result.returncode != 0
    assert "Set the environment variable METRICS_TOKEN" in result.stderr


def test_production_refuses_a_short_metrics_token() -> None:
    result = _start(METRICS_TOKEN="secret")

    assert result.returncode != 0
    assert "METRICS_TOKEN must be at least 32 characters" in result.stderr
