"""core.rows: model instances from plain SQL read as the ORM reads them."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.rows import Rows
from pools.models import PricePlan, ResourcePool
from tests.factories import pool_factory


@pytest.mark.django_db
def test_every_column_reads_as_the_orm_reads_it_converters_included() -> None:
    pool = pool_factory(cards=12)
    plans = Rows(PricePlan)

    (plan,) = plans.fetch(f"SELECT {plans.columns} FROM pools_priceplan WHERE pool_id = %s", [pool.pk])  # noqa: S608

    expected = PricePlan.objects.get(pool=pool)
    for field in PricePlan._meta.concrete_fields:
        assert getattr(plan, field.attname) == getattr(expected, field.attname), field.name
    assert not isinstance(plan.hour_prices, str)  # the JSON field's converter ran: not its text
    assert not plan._state.adding  # saved as an update, as a fetched instance is


@pytest.mark.django_db
def test_chosen_fields_alone_are_read_and_the_rest_load_on_first_use() -> None:
    pool = pool_factory(cards=12, name="east 1")
    rows = Rows(ResourcePool, ["id", "cards", "provider"], alias="p")

    (read,) = rows.fetch(f"SELECT {rows.columns} FROM pools_resourcepool p WHERE p.id = %s", [pool.pk])  # noqa: S608

    assert rows.columns == 'p."id", p."provider_id", p."cards"'
    assert (read.pk, read.cards, read.provider_id) == (pool.pk, 12, pool.provider_id)
    assert read.get_deferred_fields() == {f.attname for f in ResourcePool._meta.concrete_fields} - {
        "id",
        "provider_id",
        "cards",
    }
    with CaptureQueriesContext(connection) as loaded:
        assert read.name == "east 1"
    assert len(loaded) == 1


def test_a_field_the_model_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="no field colour"):
        Rows(ResourcePool, ["id", "colour"])
