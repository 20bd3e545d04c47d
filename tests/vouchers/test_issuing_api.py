"""Issuers grant vouchers one at a time or in bulk, all or nothing."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.factories import BuyerFactory, ProviderFactory
from vouchers import services
from vouchers.models import Voucher, VoucherProgram

pytestmark = pytest.mark.django_db


@pytest.fixture
def program(issuer) -> VoucherProgram:  # type: ignore[no-untyped-def]
    return open_program(issuer)


def open_program(issuer, **terms: Any) -> VoucherProgram:  # type: ignore[no-untyped-def]
    from decimal import Decimal

    now = timezone.now()
    program = services.program_create(
        issuer=issuer,
        name="Nantong compute voucher",
        budget=terms.pop("budget", 10_000_000),
        coverage_share=Decimal("0.2"),
        per_company_yearly_cap=2_000_000,
        valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=365),
        by="test",
        **terms,
    )
    return services.program_open(program=program, by="test")


def url(program: VoucherProgram) -> str:
    return f"/api/v1/voucher-programs/{program.pk}/vouchers/"


def test_an_issuer_grants_one_voucher(issuer_client, program, buyer) -> None:
    response = issuer_client.post(url(program), {"organization": buyer.slug, "face_value": "15000.00"}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["organization"], body["face_value"], body["remaining"], body["status"]) == (
        buyer.slug,
        "15000.00",
        "15000.00",
        "active",
    )
    assert body["code"].startswith("CV-")
    assert body["valid_until"] == program.valid_until.isoformat().replace("+00:00", "Z")
    program.refresh_from_db()
    assert (program.committed, program.budget_left) == (1_500_000, 8_500_000)


def test_a_buyer_may_be_named_by_its_id(issuer_client, program, buyer) -> None:
    response = issuer_client.post(url(program), {"organization": str(buyer.pk), "face_value": "100"}, format="json")

    assert response.status_code == 201
    assert response.json()["organization"] == buyer.slug


def test_an_issuer_grants_a_list_of_vouchers(issuer_client, program) -> None:
    buyers = [BuyerFactory() for _ in range(3)]
    rows = [{"organization": b.slug, "face_value": "1000.00"} for b in buyers]

    response = issuer_client.post(url(program), rows, format="json")

    assert response.status_code == 201, response.json()
    assert [row["organization"] for row in response.json()] == [b.slug for b in buyers]  # in request order
    assert len({row["code"] for row in response.json()}) == 3
    assert Voucher.objects.filter(program=program).count() == 3


def test_a_list_with_bad_rows_issues_nothing_and_reports_every_bad_row_by_index(issuer_client, program) -> None:
    good, provider = BuyerFactory(), ProviderFactory()
    elsewhere = BuyerFactory(province="Guangdong")
    rows = [
        {"organization": good.slug, "face_value": "1000.00"},
        {"organization": "no-such-company", "face_value": "1000.00"},
        {"organization": provider.slug, "face_value": "1000.00"},
        {"organization": BuyerFactory().slug, "face_value": "0"},
        {"organization": BuyerFactory().slug, "face_value": "NaN"},
        {"organization": BuyerFactory().slug, "face_value": "100", "valid_until": "2999-01-01T00:00:00Z"},
        {"organization": good.slug, "face_value": "1000.00"},
        {"organization": BuyerFactory().slug, "face_value": "100", "card": 1},
        "not a voucher",
        {"organization": BuyerFactory().slug, "face_value": "-5"},
        {"organization": BuyerFactory().slug, "face_value": "1000.00"},
    ]
    program.provinces = ["Zhejiang"]
    program.save()
    rows.append({"organization": elsewhere.slug, "face_value": "1000.00"})

    response = issuer_client.post(url(program), rows, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "vouchers_refused"
    assert set(error["fields"]) == {"1", "2", "3", "4", "5", "6", "7", "8", "9", "11"}
    codes = {
        index: [p["code"] for problems in fields.values() for p in problems]
        for index, fields in error["fields"].items()
    }
    assert codes["1"] == ["not_found"]
    assert codes["2"] == ["not_a_buyer"]
    assert codes["3"] == ["min_value"]
    assert codes["5"] == ["after_program_end"]
    assert codes["6"] == ["duplicate_organization"]
    assert codes["7"] == ["unknown_field"]
    assert codes["11"] == ["not_eligible"]
    assert not Voucher.objects.exists()
    program.refresh_from_db()
    assert program.committed == 0


def test_a_single_bad_voucher_is_reported_as_row_0(issuer_client, program, provider) -> None:
    response = issuer_client.post(url(program), {"organization": provider.slug, "face_value": "100"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["0"]["organization"][0]["code"] == "not_a_buyer"


@pytest.mark.parametrize(
    ("terms", "buyer_fields"),
    [
        ({"sme_only": True}, {"is_sme": False}),
        ({"cities": ["Ningbo"]}, {"city": "Hangzhou"}),
        ({"provinces": ["Beijing"]}, {"province": "Zhejiang"}),
    ],
)
def test_a_buyer_outside_the_programs_eligibility_gets_no_voucher(issuer_client, issuer, terms, buyer_fields) -> None:  # type: ignore[no-untyped-def]
    program = open_program(issuer, **terms)
    buyer = BuyerFactory(**buyer_fields)

    response = issuer_client.post(url(program), {"organization": buyer.slug, "face_value": "100"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["0"]["organization"][0]["code"] == "not_eligible"
    assert not Voucher.objects.exists()


@pytest.mark.parametrize("relation", ["itself", "subsidiary", "grandchild", "sister", "parent"])
def test_an_issuer_cannot_grant_vouchers_to_itself_or_its_own_group(issuer_client, program, issuer, relation) -> None:  # type: ignore[no-untyped-def]
    if relation == "itself":
        buyer = BuyerFactory(credit_code=issuer.credit_code)
    elif relation == "subsidiary":
        buyer = BuyerFactory(parent=issuer)
    elif relation == "grandchild":
        buyer = BuyerFactory(parent=BuyerFactory(parent=issuer))
    elif relation == "sister":
        issuer.parent = BuyerFactory()
        issuer.save(update_fields=["parent"])
        buyer = BuyerFactory(parent=issuer.parent)
    else:
        buyer = BuyerFactory()
        issuer.parent = buyer
        issuer.save(update_fields=["parent"])

    response = issuer_client.post(url(program), {"organization": buyer.slug, "face_value": "100"}, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["fields"]["0"]["organization"][0]["code"] == "related_party"
    assert not Voucher.objects.exists()


@pytest.mark.parametrize("body", ["a voucher", 5, [], None, {"organization": None, "face_value": "1"}])
def test_a_body_that_is_not_vouchers_is_a_400(issuer_client, program, body) -> None:  # type: ignore[no-untyped-def]
    response = issuer_client.post(url(program), body, format="json")

    assert response.status_code == 400


def test_vouchers_beyond_the_budget_left_issue_nothing(issuer_client, issuer) -> None:
    program = open_program(issuer, budget=150_000)
    rows = [{"organization": BuyerFactory().slug, "face_value": "1000.00"} for _ in range(2)]

    response = issuer_client.post(url(program), rows, format="json")

    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["budget_left"], error["requested"]) == ("budget_exceeded", "1500.00", "2000.00")
    assert not Voucher.objects.exists()


def test_a_draft_or_closed_program_grants_nothing(issuer_client, issuer, buyer) -> None:
    program = open_program(issuer)
    services.program_close(program=program, by="test")

    response = issuer_client.post(url(program), {"organization": buyer.slug, "face_value": "100"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "program_not_open"


def test_a_retried_issue_with_the_same_idempotency_key_grants_once(issuer_client, program, buyer) -> None:
    body = {"organization": buyer.slug, "face_value": "100.00"}

    first = issuer_client.post(url(program), body, format="json", HTTP_IDEMPOTENCY_KEY="grant-1")
    second = issuer_client.post(url(program), body, format="json", HTTP_IDEMPOTENCY_KEY="grant-1")
    other = issuer_client.post(
        url(program), {**body, "face_value": "200.00"}, format="json", HTTP_IDEMPOTENCY_KEY="grant-1"
    )

    assert first.json()["code"] == second.json()["code"]
    assert second["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert Voucher.objects.count() == 1


def test_an_operator_issues_vouchers_on_behalf_of_an_issuer(operator_client, program, buyer) -> None:
    response = operator_client.post(url(program), {"organization": buyer.slug, "face_value": "100"}, format="json")

    assert response.status_code == 201
    assert Voucher.objects.get().issued_by.startswith(operator_client.organization.slug)


def test_a_buyer_cannot_issue_vouchers(buyer_client, program, buyer) -> None:
    response = buyer_client.post(url(program), {"organization": buyer.slug, "face_value": "100"}, format="json")

    assert response.status_code == 403
    assert not Voucher.objects.exists()
