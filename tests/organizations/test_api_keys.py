import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.forms.models import model_to_dict
from rest_framework.test import APIClient

from organizations.models import ApiKey, Organization
from organizations.services import api_key_authenticate, api_key_create, api_key_revoke
from tests.factories import BuyerFactory

pytestmark = pytest.mark.django_db


def test_a_valid_key_authenticates_as_its_organization(buyer, make_client) -> None:
    response = make_client(buyer).get("/api/v1/organizations/me/")

    assert response.status_code == 200
    assert response.json()["slug"] == buyer.slug
    assert response.json()["kind"] == "buyer"


def test_a_request_without_a_key_gets_401_with_the_error_body() -> None:
    response = APIClient().get("/api/v1/organizations/me/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer cg_000000000000_wrong", "Bearer nonsense", "Token cg_a_b", "Bearer ", "Basic dXNlcjpwYXNz"],
)
def test_a_wrong_or_malformed_key_gets_401(buyer, header: str) -> None:
    api_key_create(organization=buyer, name="real")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/organizations/me/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_right_prefix_with_a_wrong_secret_gets_401(buyer) -> None:
    api_key, _raw_key = api_key_create(organization=buyer, name="real")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer cg_{api_key.prefix}_{'x' * 43}")

    assert client.get("/api/v1/organizations/me/").status_code == 401


def test_a_revoked_key_gets_401(buyer) -> None:
    api_key, raw_key = api_key_create(organization=buyer, name="soon revoked")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/organizations/me/").status_code == 200

    api_key_revoke(organization=buyer, key_id=api_key.pk, by="test")

    assert client.get("/api/v1/organizations/me/").status_code == 401


def test_a_key_of_a_deactivated_organization_gets_401(buyer) -> None:
    _api_key, raw_key = api_key_create(organization=buyer, name="k")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/organizations/me/").status_code == 200

    Organization.objects.filter(pk=buyer.pk).update(is_active=False)

    assert client.get("/api/v1/organizations/me/").status_code == 401


def test_authenticating_reads_the_key_and_its_organization_as_the_orm_does(buyer) -> None:
    api_key, raw_key = api_key_create(organization=buyer, name="k")

    authenticated = api_key_authenticate(raw_key=raw_key)

    assert authenticated is not None
    stored = ApiKey.objects.select_related("organization").get(pk=api_key.pk)
    assert (authenticated.pk, authenticated.organization.pk) == (stored.pk, stored.organization.pk)
    assert model_to_dict(authenticated) == model_to_dict(stored)
    assert authenticated.last_used_at == stored.last_used_at
    assert authenticated.created_at == stored.created_at
    assert model_to_dict(authenticated.organization) == model_to_dict(stored.organization)
    assert authenticated.organization.created_at == stored.organization.created_at
    assert not authenticated._state.adding and not authenticated.organization._state.adding


def test_keys_are_stored_hashed_never_in_clear(buyer) -> None:
    api_key, raw_key = api_key_create(organization=buyer, name="secret")
    secret = raw_key.split("_", 2)[2]

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM organizations_apikey WHERE id = %s", [api_key.pk])
        row = cursor.fetchone()

    assert all(secret not in str(column) for column in row)
    assert api_key.prefix in raw_key


def test_using_a_key_records_when_it_was_last_used(buyer) -> None:
    api_key, raw_key = api_key_create(organization=buyer, name="k")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    client.get("/api/v1/organizations/me/")

    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_creating_a_key_shows_it_once_and_it_works(buyer, make_client) -> None:
    client = make_client(buyer)

    created = client.post("/api/v1/api-keys/", {"name": "ci", "role": "read_only"}, format="json")

    assert created.status_code == 201
    new_key = created.json()["key"]
    listed = client.get("/api/v1/api-keys/").json()["results"]
    assert {row["name"] for row in listed} == {"test", "ci"}
    assert all("key" not in row for row in listed)
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {new_key}")
    assert fresh.get("/api/v1/organizations/me/").json()["slug"] == buyer.slug


def test_a_read_only_key_may_read_but_not_write(buyer, make_client) -> None:
    client = make_client(buyer, role=ApiKey.Role.READ_ONLY)

    assert client.get("/api/v1/api-keys/").status_code == 200
    response = client.post("/api/v1/api-keys/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_only_an_admin_key_manages_keys(buyer, make_client) -> None:
    member = make_client(buyer, role=ApiKey.Role.MEMBER)
    target, _ = api_key_create(organization=buyer, name="target")

    assert member.post("/api/v1/api-keys/", {"name": "x"}, format="json").status_code == 403
    assert member.delete(f"/api/v1/api-keys/{target.pk}/").status_code == 403
    assert ApiKey.objects.filter(revoked_at__isnull=True, pk=target.pk).exists()


def test_revoking_a_key_through_the_api(buyer, make_client) -> None:
    client = make_client(buyer)
    target, _ = api_key_create(organization=buyer, name="target")

    assert client.delete(f"/api/v1/api-keys/{target.pk}/").status_code == 204
    second = client.delete(f"/api/v1/api-keys/{target.pk}/")

    assert second.status_code == 409
    assert second.json()["error"]["code"] == "already_revoked"


def test_another_organizations_key_is_404_and_stays_active(buyer, make_client) -> None:
    other = BuyerFactory()
    foreign_key, _ = api_key_create(organization=other, name="theirs")
    client = make_client(buyer)

    response = client.delete(f"/api/v1/api-keys/{foreign_key.pk}/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    foreign_key.refresh_from_db()
    assert foreign_key.revoked_at is None
    assert str(foreign_key.pk) not in {row["id"] for row in client.get("/api/v1/api-keys/").json()["results"]}


def test_create_api_key_command_prints_a_working_key(buyer, capsys) -> None:
    call_command("create_api_key", "--org", buyer.slug)

    raw_key = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/organizations/me/").json()["slug"] == buyer.slug


def test_create_api_key_command_says_when_the_organization_holds_the_most_keys(buyer, settings) -> None:
    settings.API_KEYS_PER_ORGANIZATION = 1
    api_key_create(organization=buyer, name="the one")

    with pytest.raises(CommandError, match="already has 1 live API keys"):
        call_command("create_api_key", "--org", buyer.slug)

    assert ApiKey.objects.filter(organization=buyer).count() == 1


def test_the_admin_refuses_a_key_past_the_cap_on_its_form(admin_client, buyer, settings) -> None:
    settings.API_KEYS_PER_ORGANIZATION = 1
    api_key_create(organization=buyer, name="the one")

    response = admin_client.post(
        "/admin/organizations/apikey/add/", {"organization": buyer.pk, "name": "one more", "role": "member"}
    )

    assert response.status_code == 200  # the form again, with the error
    assert b"already has 1 live API keys" in response.content
    assert ApiKey.objects.filter(organization=buyer).count() == 1
