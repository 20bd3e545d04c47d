"""The operator's page shows the constellation: each satellite's next contact and in-orbit utilization."""

import re
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from dashboards.formatting import local_time, percent
from marketplace.orbit import orbit_order_place
from orbit.models import Dataset
from orbit.selectors import satellite_contacts
from organizations.services import member_set
from tests.factories import BuyerFactory, OperatorFactory, pool_factory

pytestmark = pytest.mark.django_db


def operator_page() -> str:
    operator = OperatorFactory()
    member_set(organization=operator, username="op", password="pw-orbit-1")
    client = Client()
    assert client.login(username="op", password="pw-orbit-1")
    answer = client.get(f"/dashboard/{operator.slug}/")
    assert answer.status_code == 200
    return answer.content.decode()


def test_the_operator_sees_no_orbit_section_before_a_constellation_is_listed() -> None:
    assert 'data-section="orbit"' not in operator_page()


def test_the_operator_sees_each_satellites_next_contact_and_in_orbit_utilization(constellation) -> None:
    pool_factory(cards=10)
    buyer = BuyerFactory()
    dataset = Dataset.objects.create(
        buyer=buyer,
        provider=constellation[0].pool.provider,
        satellite=constellation[0],
        size_gb=Decimal(200),
        captured_at=timezone.now(),
        region="flood",
    )
    order = orbit_order_place(buyer=buyer, dataset_id=dataset.pk, result_size_gb=Decimal("0.5"))
    busy = order.leases.get().pool_id

    html = operator_page()

    rows = dict(re.findall(r'<tr data-satellite="(\d+)">(.*?)</tr>', html, re.S))
    assert len(rows) == 12
    for satellite in constellation:
        first = satellite_contacts(
            satellite=satellite, start=timezone.now(), end=timezone.now() + timezone.timedelta(days=1)
        )[0]
        assert local_time(first.start) in rows[str(satellite.norad_id)]
        shown = percent(1 if satellite.pool_id == busy else 0)
        assert (
            f'data-figure="satellite-utilization" data-value="{1 if satellite.pool_id == busy else 0}'
            in rows[str(satellite.norad_id)]
        )
        assert f">{shown}</td>" in rows[str(satellite.norad_id)]
    assert re.search(r'data-figure="orbit-utilization" data-value="0.0833"', html)
