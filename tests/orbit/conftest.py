from typing import Any

import pytest

from orbit.models import Satellite
from orbit.services import constellation_register
from tests.factories import ProviderFactory


@pytest.fixture(autouse=True)
def _at_the_fixed_moment(frozen_clock: Any) -> None:
    """Contacts, quotes and money run at ``TEST_NOW`` (tests/conftest.py)."""


@pytest.fixture
def constellation() -> list[Satellite]:
    return constellation_register(provider=ProviderFactory(), by="test")
