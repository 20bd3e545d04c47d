"""``seed_national``: the early-2026 national platform, reproducible from a seed."""

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db.models import QuerySet, Sum
from django.utils import timezone

from marketplace.selectors import offers_list
from organizations.models import Organization
from organizations.services import api_key_authenticate
from organizations.validators import validate_credit_code
from pools.models import PricePlan, ResourcePool
from pools.reference_data import HUBS
from pools.services import _plan_prices

pytestmark = pytest.mark.django_db

HUB_PROVINCES = {hub["code"]: set(hub["provinces"]) for hub in HUBS}


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path  # the keys file goes here, not into the developer's var/
    return tmp_path


def seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_national", *args, stdout=out)
    return out.getvalue()


def seeded_pools() -> QuerySet[ResourcePool]:
    return ResourcePool.objects.filter(provider__slug__startswith="nat-")


def pool_tuples() -> list[tuple[object, ...]]:
    return sorted(
        (p.provider.slug, p.name, p.hub_id, p.province, p.gpu_model_id, p.cards, plan.price_per_card_hour)
        for p in seeded_pools().select_related("provider")
        for plan in p.price_plans.all()
    )


def test_national_scale_has_155_providers() -> None:
    seed()

    assert Organization.objects.filter(kind="provider", slug__startswith="nat-").count() == 155


def test_national_scale_has_578_pools_with_720000_cards() -> None:
    seed()

    assert seeded_pools().count() == 578
    assert seeded_pools().aggregate(cards=Sum("cards"))["cards"] == 720_000


def test_national_scale_has_pools_in_all_31_provinces_and_all_8_hubs() -> None:
    seed()

    assert seeded_pools().order_by().values("province").distinct().count() == 31
    assert set(seeded_pools().values_list("hub_id", flat=True)) == set(HUB_PROVINCES)


def test_every_pool_lies_in_its_hubs_dispatch_region() -> None:
    seed()

    pools = seeded_pools().values_list("hub_id", "province")
    assert [(hub, province) for hub, province in pools if province not in HUB_PROVINCES[hub]] == []


def test_every_seeded_credit_code_is_valid() -> None:
    seed()

    codes = list(Organization.objects.filter(slug__startswith="nat-").values_list("credit_code", flat=True))
    assert len(codes) == 155 + 3000 + 2
    for code in codes:
        validate_credit_code(code)


def test_the_same_seed_after_reset_gives_the_same_pools() -> None:
    seed("--seed", "7")
    first = pool_tuples()

    seed("--seed", "7", "--reset")

    assert pool_tuples() == first


def test_a_different_seed_gives_different_pools() -> None:
    seed("--seed", "7")
    first = pool_tuples()

    seed("--seed", "8", "--reset")

    assert pool_tuples() != first


def test_a_second_run_without_reset_is_refused() -> None:
    seed("--scale", "0.01")

    with pytest.raises(CommandError, match="--reset"):
        seed("--scale", "0.01")


def test_first_price_plan_is_what_price_plan_create_would_compute() -> None:
    seed()

    plans = PricePlan.objects.filter(pool__in=seeded_pools()).select_related("pool__hub", "pool__gpu_model")
    assert plans.count() == 578
    for plan in plans:
        factors, prices = _plan_prices(pool=plan.pool, price_per_card_hour=plan.price_per_card_hour, time_of_use=None)
        assert (plan.version, plan.time_of_use, plan.hour_prices) == (1, factors, prices), plan.pool.name


def test_every_active_pool_is_offered_right_after_seeding() -> None:
    seed()

    active = seeded_pools().filter(status=ResourcePool.Status.ACTIVE)
    assert set(offers_list(now=timezone.now()).values_list("pk", flat=True)) == set(active.values_list("pk", flat=True))


def test_smallest_scale_still_has_a_pool_in_every_hub() -> None:
    seed("--scale", "0.01")

    assert seeded_pools().count() == 8
    assert set(seeded_pools().values_list("hub_id", flat=True)) == set(HUB_PROVINCES)


def test_keys_file_holds_a_working_key_for_each_kind(data_dir: Path) -> None:
    seed("--scale", "0.01")

    lines = [line.split() for line in (data_dir / "national-keys.txt").read_text().splitlines()]
    kinds = {}
    for kind, slug, raw_key in lines:
        api_key = api_key_authenticate(raw_key=raw_key)
        assert api_key is not None and api_key.organization.slug == slug
        kinds[kind] = api_key.organization.kind
    assert kinds == {"buyer": "buyer", "provider": "provider", "issuer": "issuer", "operator": "operator"}


def test_the_price_index_has_90_days_of_hourly_history_rising_to_todays_prices() -> None:
    from datetime import timedelta
    from decimal import Decimal

    from marketplace.models import PriceIndexSnapshot

    seed("--scale", "0.05")

    now_rows = {
        row.gpu_model_id: row
        for row in PriceIndexSnapshot.objects.filter(hour=timezone.now().replace(minute=0, second=0, microsecond=0))
    }
    hours = PriceIndexSnapshot.objects.order_by().values_list("hour", flat=True).distinct()
    oldest = PriceIndexSnapshot.objects.filter(hour=min(hours))
    assert len(hours) == 90 * 24 + 1
    assert max(hours) - min(hours) == timedelta(days=90)
    assert PriceIndexSnapshot.objects.count() == len(now_rows) * len(hours)
    for row in oldest:
        now_index = now_rows[row.gpu_model_id].index
        assert set(row.index) == set(now_index)
        assert all(Decimal(row.index[area]["median"]) < Decimal(now_index[area]["median"]) for area in row.index)
