"""Operators' admin pages: programs and vouchers through the services, redemptions read-only."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import BuyerFactory, IssuerFactory, ProviderFactory
from tests.vouchers.factories import charge_line, program_factory, redeem, voucher_factory
from vouchers.models import Redemption, Voucher, VoucherProgram

pytestmark = pytest.mark.django_db


def _split(value) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"0": value.strftime("%Y-%m-%d"), "1": value.strftime("%H:%M:%S")}


def test_the_voucher_pages_list_programs_vouchers_and_redemptions(admin_client, buyer, provider) -> None:
    voucher = voucher_factory(buyer=buyer)
    redeem(buyer, charge_line(provider, 100_000))
    redemption = Redemption.objects.get()

    for url in [
        "/admin/vouchers/voucherprogram/",
        f"/admin/vouchers/voucherprogram/{voucher.program_id}/change/",
        "/admin/vouchers/voucherprogram/add/",
        "/admin/vouchers/voucher/",
        f"/admin/vouchers/voucher/{voucher.pk}/change/",
        "/admin/vouchers/voucher/add/",
        "/admin/vouchers/redemption/",
        f"/admin/vouchers/redemption/{redemption.pk}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    assert admin_client.get("/admin/vouchers/redemption/add/").status_code == 403


def test_an_operator_creates_a_program_for_an_issuer(admin_client) -> None:
    issuer, now = IssuerFactory(), timezone.now()
    valid_from, valid_until = _split(now), _split(now + timedelta(days=365))

    response = admin_client.post(
        "/admin/vouchers/voucherprogram/add/",
        {
            "issuer": issuer.pk,
            "name": "Langfang compute voucher",
            "budget_yuan": "1000000.00",
            "per_company_yearly_cap_yuan": "1000000.00",
            "coverage_share": "0.6",
            **{f"valid_from_{k}": v for k, v in valid_from.items()},
            **{f"valid_until_{k}": v for k, v in valid_until.items()},
            "provinces": '["Hebei"]',
            "cities": "[]",
            "hubs": "[]",
            "gpu_models": "[]",
            "workloads": '["training"]',
        },
    )

    assert response.status_code == 302, response.content.decode()[-3000:]
    program = VoucherProgram.objects.get()
    assert (program.issuer, program.budget, program.status) == (issuer, 100_000_000, "draft")
    assert (program.provinces, program.workloads, program.created_by) == (["Hebei"], ["training"], "admin:admin")


def test_an_operator_issues_a_voucher_on_behalf_of_an_issuer(admin_client) -> None:
    program, buyer = program_factory(valid_until=timezone.now() + timedelta(days=30)), BuyerFactory()

    response = admin_client.post(
        "/admin/vouchers/voucher/add/", {"program": program.pk, "buyer": buyer.pk, "face_value_yuan": "15000.00"}
    )

    assert response.status_code == 302, response.content.decode()[-3000:]
    voucher = Voucher.objects.get()
    assert (voucher.buyer, voucher.face_value, voucher.issued_by) == (buyer, 1_500_000, "admin:admin")
    program.refresh_from_db()
    assert program.committed == 1_500_000


def test_the_admin_refuses_a_voucher_for_an_ineligible_company(admin_client) -> None:
    program = program_factory(valid_until=timezone.now() + timedelta(days=30), provinces=["Beijing"])

    response = admin_client.post(
        "/admin/vouchers/voucher/add/", {"program": program.pk, "buyer": BuyerFactory().pk, "face_value_yuan": "1"}
    )

    assert response.status_code == 200
    assert "the program is for companies in Beijing" in response.content.decode()
    assert not Voucher.objects.exists()


def test_an_operator_revokes_vouchers_with_an_admin_action(admin_client, buyer) -> None:
    voucher = voucher_factory(buyer=buyer)

    admin_client.post("/admin/vouchers/voucher/", {"action": "revoke_vouchers", "_selected_action": [voucher.pk]})

    voucher.refresh_from_db()
    assert voucher.status == "revoked"


def test_an_operator_opens_draft_programs_with_an_admin_action(admin_client) -> None:
    program = program_factory(status="draft", valid_until=timezone.now() + timedelta(days=30))

    admin_client.post("/admin/vouchers/voucherprogram/", {"action": "open_programs", "_selected_action": [program.pk]})

    program.refresh_from_db()
    assert program.status == "open"


def test_only_a_programs_name_changes_in_the_admin(admin_client) -> None:
    program = program_factory(valid_until=timezone.now() + timedelta(days=30), providers=[ProviderFactory()])

    admin_client.post(f"/admin/vouchers/voucherprogram/{program.pk}/change/", {"name": "Renamed", "budget": "1"})

    program.refresh_from_db()
    assert (program.name, program.budget, program.providers.count()) == ("Renamed", 100_000_000, 1)
