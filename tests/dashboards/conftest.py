from typing import Any

import pytest

from tests.dashboards.scenario import STALE_SECONDS


@pytest.fixture(autouse=True)
def _heartbeats_stay_fresh_through_a_test(settings: Any) -> None:
    settings.POOL_HEARTBEAT_STALE_SECONDS = STALE_SECONDS


@pytest.fixture(autouse=True)
def _money_at_a_fixed_moment(frozen_clock: Any) -> None:
    """The pages show rated usage, invoices and prices: they run at ``TEST_NOW`` (tests/conftest.py)."""
