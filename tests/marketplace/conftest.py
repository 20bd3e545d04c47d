from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _money_at_a_fixed_moment(frozen_clock: Any) -> None:
    """Quotes, orders and offers price by the local hour: they run at ``TEST_NOW`` (tests/conftest.py)."""
