"""A client generated from the served schema works without reading the source.

openapi-python-client (pinned in requirements-dev.txt) generates a package from
``GET /api/schema/`` of a live server, offline (its post-hooks are the venv's ruff); the
tests import it and meter usage, quote, order and pay through it alone.
"""

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from django.utils import timezone

from organizations.services import api_key_create
from tests.billing.conftest import running_lease
from tests.factories import pool_factory

pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "cg_generated_client"
BIN = Path(sys.executable).parent


@pytest.fixture
def generated(live_server: Any, tmp_path: Path) -> Iterator[ModuleType]:
    schema = httpx.get(f"{live_server.url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert schema.status_code == 200
    (tmp_path / "schema.json").write_bytes(schema.content)
    # The default post-hooks call `ruff` from PATH; these name the venv's.
    (tmp_path / "config.yaml").write_text(
        f'post_hooks:\n  - "{BIN / "ruff"} check . --fix-only --quiet"\n  - "{BIN / "ruff"} format . --quiet"\n'
    )
    done = subprocess.run(
        [BIN / "openapi-python-client", "generate", "--path", "schema.json", "--config", "config.yaml",
         "--meta", "none", "--output-path", PACKAGE],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every operation generated
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _api(generated: ModuleType, live_server: Any, organization: Any) -> Any:
    _, key = api_key_create(organization=organization, name="generated client")
    return generated.AuthenticatedClient(base_url=live_server.url, token=key, raise_on_unexpected_status=True)


def _operation(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.v1.{name}")


def test_every_generated_operation_imports(generated: ModuleType) -> None:
    operations = sorted(path.stem for path in Path(generated.__file__).parent.joinpath("api", "v1").glob("v1_*.py"))

    for name in operations:
        assert hasattr(_operation(name), "sync_detailed"), name
    assert "v1_usage_events_create" in operations


def test_a_provider_meters_usage_one_event_a_batch_and_in_binary_mode(
    generated: ModuleType, live_server: Any, buyer: Any, provider: Any
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    report = _operation("v1_usage_events_create")
    lease = running_lease(buyer=buyer, provider=provider, cards=8)
    api = _api(generated, live_server, provider)
    when = timezone.now() - timedelta(minutes=30)

    def gpu(event_id: str) -> Any:
        return models.GpuSecondsEvent(
            specversion=models.SpecversionEnum("1.0"), id=event_id, source="agent://generated", subject=lease.pk,
            time=when, type_=models.GpuSecondsEventTypeEnum("compute.gpu_seconds"),
            data=models.GpuSecondsData(quantity=480, cards=8),
        )  # fmt: skip

    tokens = models.TokensEvent(
        specversion=models.SpecversionEnum("1.0"), id="tok-1", source="agent://generated", subject=lease.pk,
        time=when, type_=models.TokensEventTypeEnum("compute.tokens"),
        data=models.TokensData(model="qwen3-72b", input_tokens=1000, output_tokens=200),
    )  # fmt: skip

    one = report.sync(client=api, body=gpu("gpu-1"))
    batch = report.sync(client=api, body=[gpu("gpu-2"), tokens, gpu("gpu-1")])
    binary = report.sync(
        client=api,
        body=models.GpuSecondsData(quantity=60),
        ce_specversion=models.V1UsageEventsCreateCeSpecversion("1.0"),
        ce_id="gpu-3",
        ce_source="agent://generated",
        ce_type=models.V1UsageEventsCreateCeType("compute.gpu_seconds"),
        ce_subject=str(lease.pk),
        ce_time=when.isoformat(),
    )

    assert isinstance(one, models.IngestResult) and (one.accepted, one.rejected) == (1, 0)
    # a card lease bills card-seconds only: the typed token event is read, and refused for it
    assert (batch.accepted, batch.duplicates, batch.rejected) == (1, 1, 1)
    assert [error.code for error in batch.errors] == ["tokens_on_card_lease"]
    assert (binary.accepted, binary.rejected, binary.errors) == (1, 0, [])


def test_a_buyer_quotes_orders_and_tops_up_its_bank_through_the_generated_client(
    generated: ModuleType, live_server: Any, buyer: Any, provider: Any, stripe: str
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    pool = pool_factory(provider=provider, cards=16)
    api = _api(generated, live_server, buyer)
    wanted = models.OrderRequestRequest(
        gpu_model="H100-80G", cards=4, workload=models.WorkloadEnum("training"), duration_hours="2"
    )

    quote = _operation("v1_quotes_create").sync(client=api, body=wanted)
    order = _operation("v1_orders_create").sync(client=api, body=wanted, idempotency_key="order-1")
    again = _operation("v1_orders_create").sync(client=api, body=wanted, idempotency_key="order-1")
    refused = _operation("v1_orders_create").sync(
        client=api,
        body=models.OrderRequestRequest(
            gpu_model="H100-80G", cards=1000, workload=models.WorkloadEnum("training"), duration_hours="2"
        ),
    )
    top_up = _operation("v1_bank_top_ups_create").sync(
        client=api, body=models.TopUpCreateRequest(amount="500.00"), idempotency_key="top-up-1"
    )

    assert isinstance(quote, models.QuoteResponse) and quote.placements[0].pool == pool.pk
    assert isinstance(order, models.Order) and order.status == models.OrderStatusEnum("placed")
    assert isinstance(order.lease, uuid.UUID) and order.user_region is None
    assert (again.id, again.lease) == (order.id, order.lease)  # replayed: one order
    assert isinstance(refused, models.Error) and refused.error.code == "no_capacity"
    assert refused.error.reasons[0].reason == "free_cards"
    assert isinstance(top_up, models.TopUp) and top_up.status == models.TopUpStatusEnum("pending")
    assert top_up.client_secret and top_up.amount == "500.00"
