import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from organizations.models import Organization
from organizations.selectors import related_organizations
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
def test_related_parties_are_the_whole_group_and_the_same_legal_entity() -> None:
    # given a group of three generations, a company that is one of them under another kind, and strangers
    top = BuyerFactory()
    middle, aunt = BuyerFactory(parent=top), ProviderFactory(parent=top)
    buyer, sister, cousin = BuyerFactory(parent=middle), ProviderFactory(parent=middle), ProviderFactory(parent=aunt)
    child = ProviderFactory(parent=buyer)
    same_entity_as_top = ProviderFactory(credit_code=top.credit_code)
    stranger, strangers_child = ProviderFactory(), ProviderFactory()
    strangers_child.parent = stranger
    strangers_child.save(update_fields=["parent"])

    # when the buyer's group is read
    group = related_organizations(organization=buyer)

    # then it holds its ancestors, descendants, siblings and cousins, and the same legal entity, not strangers
    members = (top, middle, aunt, buyer, sister, cousin, child, same_entity_as_top)
    assert group == frozenset(member.pk for member in members)
    assert stranger.pk not in group and strangers_child.pk not in group


@pytest.mark.django_db
def test_organizations_me_is_the_callers_own(buyer, other_buyer, make_client) -> None:
    assert make_client(other_buyer).get("/api/v1/organizations/me/").json()["id"] == str(other_buyer.pk)
    assert make_client(buyer).get("/api/v1/organizations/me/").json()["id"] == str(buyer.pk)
