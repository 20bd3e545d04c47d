"""Buyers see their vouchers and each redemption; issuers see and revoke what they granted."""

import pytest

from tests.vouchers.factories import charge_line, program_factory, redeem, voucher_factory
from vouchers.models import Voucher, VoucherProgram

pytestmark = pytest.mark.django_db


def test_a_buyer_sees_its_vouchers_remaining_value_and_each_redemption(buyer, buyer_client, provider) -> None:
    voucher = voucher_factory(buyer=buyer, face_value=1_500_000)
    line = charge_line(provider, 100_000)
    redeem(buyer, line, invoice="invoice-7")

    (listed,) = buyer_client.get("/api/v1/vouchers/").json()["results"]
    detail = buyer_client.get(f"/api/v1/vouchers/{voucher.pk}/").json()

    assert listed == detail
    assert (detail["code"], detail["face_value"], detail["remaining"], detail["currency"]) == (
        voucher.code,
        "15000.00",
        "14800.00",
        "CNY",
    )
    (redemption,) = detail["redemptions"]
    assert (redemption["invoice"], redemption["invoice_line"], redemption["lease"]) == (
        "invoice-7",
        "line-1",
        line.lease_id,
    )
    assert (redemption["amount"], redemption["line_amount"], redemption["provider"]) == (
        "200.00",
        "1000.00",
        provider.slug,
    )
    assert redemption["reversal"] is None


def test_another_buyers_vouchers_are_invisible(buyer, other_buyer_client) -> None:
    voucher = voucher_factory(buyer=buyer)

    assert other_buyer_client.get("/api/v1/vouchers/").json()["results"] == []
    assert other_buyer_client.get(f"/api/v1/vouchers/{voucher.pk}/").status_code == 404


def test_an_issuer_sees_the_vouchers_it_granted_and_no_others(issuer, issuer_client, buyer) -> None:
    mine = voucher_factory(program_factory(issuer), buyer)
    theirs = voucher_factory(buyer=buyer)

    assert [row["id"] for row in issuer_client.get("/api/v1/vouchers/").json()["results"]] == [str(mine.pk)]
    assert issuer_client.get(f"/api/v1/vouchers/{theirs.pk}/").status_code == 404


def test_vouchers_filter_by_status(buyer, buyer_client) -> None:
    active = voucher_factory(buyer=buyer)

    assert [row["id"] for row in buyer_client.get("/api/v1/vouchers/?status=active").json()["results"]] == [
        str(active.pk)
    ]
    assert buyer_client.get("/api/v1/vouchers/?status=revoked").json()["results"] == []
    assert buyer_client.get("/api/v1/vouchers/?status=bogus").status_code == 400


def test_a_provider_may_not_list_vouchers(provider_client) -> None:
    assert provider_client.get("/api/v1/vouchers/").status_code == 403


def test_an_issuer_revokes_a_voucher_and_its_value_returns_to_the_budget(issuer, issuer_client, buyer) -> None:
    voucher = voucher_factory(program_factory(issuer), buyer, face_value=1_500_000)

    response = issuer_client.post(f"/api/v1/vouchers/{voucher.pk}/revoke/", {"reason": "fraud"}, format="json")

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["remaining"], response.json()["released"]) == (
        "revoked",
        "0.00",
        "15000.00",
    )
    assert VoucherProgram.objects.get(pk=voucher.program_id).committed == 0
    again = issuer_client.post(f"/api/v1/vouchers/{voucher.pk}/revoke/", format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "voucher_ended")


def test_a_buyer_cannot_revoke_its_voucher(buyer, buyer_client) -> None:
    voucher = voucher_factory(buyer=buyer)

    assert buyer_client.post(f"/api/v1/vouchers/{voucher.pk}/revoke/", format="json").status_code == 403
    assert Voucher.objects.get(pk=voucher.pk).status == "active"


def test_another_issuers_voucher_cannot_be_revoked(issuer_client, buyer) -> None:
    voucher = voucher_factory(buyer=buyer)

    assert issuer_client.post(f"/api/v1/vouchers/{voucher.pk}/revoke/", format="json").status_code == 404
    assert Voucher.objects.get(pk=voucher.pk).status == "active"


def test_a_revoke_with_an_unknown_field_is_refused(issuer, issuer_client, buyer) -> None:
    voucher = voucher_factory(program_factory(issuer), buyer)

    response = issuer_client.post(f"/api/v1/vouchers/{voucher.pk}/revoke/", {"reasn": "x"}, format="json")

    assert response.status_code == 400
    assert Voucher.objects.get(pk=voucher.pk).status == "active"
