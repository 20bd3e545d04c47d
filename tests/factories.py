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
