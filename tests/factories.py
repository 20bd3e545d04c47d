import factory

from organizations.models import Organization
from organizations.validators import credit_code_check_char


def _credit_code(n: int) -> str:
    first17 = f"9111000{n:010d}"
    return first17 + credit_code_check_char(first17)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    kind = Organization.Kind.BUYER
    slug = factory.Sequence(lambda n: f"org-{n}")
    legal_name = factory.Sequence(lambda n: f"Test Company {n} Co., Ltd.")
    credit_code = factory.Sequence(_credit_code)
    province = "Zhejiang"
    city = "Hangzhou"
    is_sme = True


class BuyerFactory(OrganizationFactory):
    kind = Organization.Kind.BUYER


class ProviderFactory(OrganizationFactory):
    kind = Organization.Kind.PROVIDER


class IssuerFactory(OrganizationFactory):
    kind = Organization.Kind.ISSUER


class OperatorFactory(OrganizationFactory):
    kind = Organization.Kind.OPERATOR


def pool_factory(**overrides):  # type: ignore[no-untyped-def]
    """A pool registered through the service (so it has its first price plan), made
    active with a fresh heartbeat unless told otherwise."""
    from decimal import Decimal

    from django.utils import timezone

    from pools.models import GpuModel, ResourcePool
    from pools.services import pool_register

    status = overrides.pop("status", ResourcePool.Status.ACTIVE)
    heartbeat_at = overrides.pop("last_heartbeat_at", timezone.now())
    fields = {
        "name": "pool",
        "hub_id": "ningxia",
        "province": "Ningxia",
        "gpu_model": GpuModel.objects.get(code="H100-80G"),
        "cards": 100,
        "price_per_card_hour": Decimal("15.0000"),
        "pue": Decimal("1.20"),
        "green_share": Decimal("0.500"),
        "by": "test",
        **overrides,
    }
    if "provider" not in fields:
        fields["provider"] = ProviderFactory()
    pool = pool_register(**fields)
    ResourcePool.objects.filter(pk=pool.pk).update(status=status, last_heartbeat_at=heartbeat_at)
    pool.refresh_from_db()
    return pool
