from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from organizations.models import Organization
from tests.factories import IssuerFactory


@pytest.fixture
def other_issuer(db: None) -> Organization:
    return IssuerFactory()


@pytest.fixture
def issuer_client(issuer: Organization, make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(issuer)


@pytest.fixture
def operator_client(operator: Organization, make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(operator)


@pytest.fixture
def provider_client(provider: Organization, make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(provider)
