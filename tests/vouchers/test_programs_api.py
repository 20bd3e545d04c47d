"""Issuers run programs through the API; operators oversee them."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from organizations.models import ApiKey
from tests.factories import ProviderFactory
from vouchers.models import VoucherProgram

pytestmark = pytest.mark.django_db


def valid_program(**changes: Any) -> dict[str, Any]:
    now = timezone.now()
    return {
        "name": "Hangzhou compute voucher 2026",
        "budget": "250000000.00",
        "coverage_share": "0.3",
        "per_company_yearly_cap": "8000000.00",
        "valid_from": (now - timedelta(days=1)).isoformat(),
        "valid_until": (now + timedelta(days=365)).isoformat(),
        "provinces": ["Zhejiang"],
        "cities": ["Hangzhou"],
        "sme_only": True,
        "hubs": ["yangtze", "ningxia"],
        "gpu_models": ["H100-80G", "910B"],
        "workloads": ["training", "batch_inference"],
        **changes,
    }


def test_an_issuer_creates_a_draft_program(issuer_client, issuer) -> None:
    provider = ProviderFactory()

    response = issuer_client.post("/api/v1/voucher-programs/", valid_program(providers=[provider.slug]), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["issuer"], body["status"], body["currency"]) == (issuer.slug, "draft", "CNY")
    assert (body["budget"], body["budget_left"], body["committed"]) == ("250000000.00", "250000000.00", "0.00")
    assert (body["coverage_share"], body["per_company_yearly_cap"]) == ("0.3000", "8000000.00")
    assert (body["hubs"], body["providers"], body["sme_only"]) == (["ningxia", "yangtze"], [provider.slug], True)
    program = VoucherProgram.objects.get(pk=body["id"])
    assert (program.budget, program.per_company_yearly_cap) == (25_000_000_000, 800_000_000)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"coverage_share": "1.5"}, "coverage_share"),
        ({"coverage_share": "-0.1"}, "coverage_share"),
        ({"coverage_share": "0"}, "coverage_share"),
        ({"coverage_share": "NaN"}, "coverage_share"),
        ({"coverage_share": "Infinity"}, "coverage_share"),
        ({"coverage_share": "0.12345"}, "coverage_share"),
        ({"coverage_share": True}, "coverage_share"),
        ({"budget": "0"}, "budget"),
        ({"budget": "-100.00"}, "budget"),
        ({"budget": "NaN"}, "budget"),
        ({"budget": "1e30"}, "budget"),
        ({"budget": "10.001"}, "budget"),
        ({"budget": ["1"]}, "budget"),
        ({"per_company_yearly_cap": "0"}, "per_company_yearly_cap"),
        ({"valid_until": "2020-01-01T00:00:00Z", "valid_from": "2020-06-01T00:00:00Z"}, "valid_until"),
        ({"valid_until": "2020-01-01T00:00:00Z", "valid_from": "2019-06-01T00:00:00Z"}, "valid_until"),
        ({"valid_until": "next year"}, "valid_until"),
        ({"provinces": ["Atlantis"]}, "provinces"),
        ({"provinces": ["Zhejiang", "Zhejiang"]}, "provinces"),
        ({"provinces": "Zhejiang"}, "provinces"),
        ({"hubs": ["atlantis"]}, "hubs"),
        ({"gpu_models": ["GTX-1080"]}, "gpu_models"),
        ({"workloads": ["mining"]}, "workloads"),
        ({"providers": ["no-such-provider"]}, "providers"),
        ({"cities": ["x" * 65]}, "cities"),
        ({"name": ""}, "name"),
        ({"budgett": "1.00"}, "budgett"),
    ],
)
def test_bad_programs_are_refused_and_nothing_is_created(issuer_client, change, field) -> None:  # type: ignore[no-untyped-def]
    response = issuer_client.post("/api/v1/voucher-programs/", valid_program(**change), format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    assert not VoucherProgram.objects.exists()


def test_a_provider_list_naming_a_buyer_is_refused(issuer_client, buyer) -> None:
    response = issuer_client.post("/api/v1/voucher-programs/", valid_program(providers=[buyer.slug]), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["providers"]["0"][0]["code"] == "wrong_kind"


@pytest.mark.parametrize("kind", ["buyer", "provider"])
def test_buyers_and_providers_may_not_touch_programs(request, kind) -> None:  # type: ignore[no-untyped-def]
    client = request.getfixturevalue(f"{kind}_client")

    assert client.get("/api/v1/voucher-programs/").status_code == 403
    response = client.post("/api/v1/voucher-programs/", valid_program(), format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_a_read_only_key_cannot_create_a_program(issuer, make_client) -> None:
    client = make_client(issuer, role=ApiKey.Role.READ_ONLY)

    assert client.post("/api/v1/voucher-programs/", valid_program(), format="json").status_code == 403
    assert client.get("/api/v1/voucher-programs/").status_code == 200


def test_an_operator_creates_a_program_on_behalf_of_an_issuer(operator_client, issuer) -> None:
    response = operator_client.post("/api/v1/voucher-programs/", valid_program(issuer=issuer.slug), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["issuer"] == issuer.slug


def test_an_operator_must_name_the_issuer(operator_client) -> None:
    response = operator_client.post("/api/v1/voucher-programs/", valid_program(), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "issuer_required"


def test_an_operator_cannot_make_a_buyer_an_issuer(operator_client, buyer) -> None:
    response = operator_client.post("/api/v1/voucher-programs/", valid_program(issuer=str(buyer.pk)), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["issuer"][0]["code"] == "wrong_kind"


def test_an_issuer_cannot_create_a_program_for_another_issuer(issuer_client, other_issuer) -> None:
    response = issuer_client.post("/api/v1/voucher-programs/", valid_program(issuer=other_issuer.slug), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_your_issuer"
    assert not VoucherProgram.objects.exists()


def test_a_program_opens_once_and_closes_once(issuer_client) -> None:
    program = issuer_client.post("/api/v1/voucher-programs/", valid_program(), format="json").json()
    url = f"/api/v1/voucher-programs/{program['id']}"

    opened = issuer_client.post(f"{url}/open/")
    reopened = issuer_client.post(f"{url}/open/")
    closed = issuer_client.post(f"{url}/close/")
    reclosed = issuer_client.post(f"{url}/close/")

    assert (opened.status_code, opened.json()["status"]) == (200, "open")
    assert (reopened.status_code, reopened.json()["error"]["code"]) == (409, "invalid_transition")
    assert (closed.status_code, closed.json()["status"]) == (200, "closed")
    assert reclosed.status_code == 409


def test_an_issuer_lists_only_its_programs_and_an_operator_all(
    issuer_client, make_client, other_issuer, operator_client
):  # type: ignore[no-untyped-def]
    mine = issuer_client.post("/api/v1/voucher-programs/", valid_program(), format="json").json()
    theirs = make_client(other_issuer).post("/api/v1/voucher-programs/", valid_program(), format="json").json()

    assert [row["id"] for row in issuer_client.get("/api/v1/voucher-programs/").json()["results"]] == [mine["id"]]
    everything = {row["id"] for row in operator_client.get("/api/v1/voucher-programs/").json()["results"]}
    assert everything == {mine["id"], theirs["id"]}


def test_another_issuers_program_is_404_everywhere(issuer_client, make_client, other_issuer) -> None:
    theirs = make_client(other_issuer).post("/api/v1/voucher-programs/", valid_program(), format="json").json()
    url = f"/api/v1/voucher-programs/{theirs['id']}"

    for method, path in [
        ("get", f"{url}/"),
        ("post", f"{url}/open/"),
        ("post", f"{url}/close/"),
        ("get", f"{url}/report/"),
        ("get", f"{url}/report/?format=csv"),
        ("post", f"{url}/vouchers/"),
    ]:
        response = getattr(issuer_client, method)(path, format="json") if method == "post" else issuer_client.get(path)
        assert response.status_code == 404, (path, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert VoucherProgram.objects.get(pk=theirs["id"]).status == "draft"


def test_a_retried_program_creation_with_the_same_idempotency_key_creates_one(issuer_client) -> None:
    body = valid_program()

    first = issuer_client.post("/api/v1/voucher-programs/", body, format="json", HTTP_IDEMPOTENCY_KEY="p-1")
    second = issuer_client.post("/api/v1/voucher-programs/", body, format="json", HTTP_IDEMPOTENCY_KEY="p-1")

    assert first.json()["id"] == second.json()["id"]
    assert VoucherProgram.objects.count() == 1
