import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from organizations.models import Organization
from organizations.validators import credit_code_check_char, validate_credit_code
from tests.factories import BuyerFactory, ProviderFactory

# Codes of registered companies, taken from the sample data of public validators
# of GB 32100-2015: an independent check of the check-character arithmetic.
REAL_CODES = ["91350200776049653A", "91440101MA5CJQ4N59", "9135021359498494XQ"]


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_credit_codes_validate(code: str) -> None:
    validate_credit_code(code)


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("913502007760496", "18 characters"),
        ("91350200776049653B", "check character"),
        ("913502007760496I3A", "other than I, O, Z, S, V"),
        ("91350200776049653a", "other than I, O, Z, S, V"),
    ],
)
def test_bad_credit_codes_are_refused_with_a_reason(code: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        validate_credit_code(code)


def test_check_char_matches_a_published_code() -> None:
    assert credit_code_check_char("91350200MA31E12PX") == "F"


@pytest.mark.django_db
def test_create_organization_command(capsys) -> None:
    call_command(
        "create_organization", "--kind", "provider", "--slug", "gz-cloud", "--name", "Guizhou Cloud Co., Ltd.",
        "--credit-code", REAL_CODES[1], "--province", "Guizhou", "--city", "Guiyang",
    )  # fmt: skip

    organization = Organization.objects.get(slug="gz-cloud")
    assert (organization.kind, organization.province) == ("provider", "Guizhou")


@pytest.mark.django_db
def test_create_organization_command_refuses_a_bad_credit_code() -> None:
    with pytest.raises(CommandError, match="check character"):
        call_command(
            "create_organization", "--kind", "buyer", "--slug", "bad", "--name", "Bad",
            "--credit-code", "91350200776049653B", "--province", "Beijing",
        )  # fmt: skip
    assert not Organization.objects.filter(slug="bad").exists()


@pytest.mark.django_db
def test_related_parties_share_a_credit_code_or_a_group() -> None:
    group = BuyerFactory()
    buyer = BuyerFactory(parent=group)
    sister_provider = ProviderFactory(parent=group)
    same_entity_provider = ProviderFactory(credit_code=buyer.credit_code)
    stranger = ProviderFactory()

    assert buyer.is_related_to(sister_provider)
    assert buyer.is_related_to(group)
    assert buyer.is_related_to(same_entity_provider)
    assert not buyer.is_related_to(stranger)


@pytest.mark.django_db
def test_organizations_me_is_the_callers_own(buyer, other_buyer, make_client) -> None:
    assert make_client(other_buyer).get("/api/v1/organizations/me/").json()["id"] == str(other_buyer.pk)
    assert make_client(buyer).get("/api/v1/organizations/me/").json()["id"] == str(buyer.pk)
