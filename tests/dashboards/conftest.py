from typing import Any

import pytest

from tests.dashboards.scenario import STALE_SECONDS


@pytest.fixture(autouse=True)
def _heartbeats_stay_fresh_through_a_test(settings: Any) -> None:
    settings.POOL_HEARTBEAT_STALE_SECONDS = STALE_SECONDS
