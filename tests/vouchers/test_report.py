"""The issuer's report: what was granted, spent, reversed, expired and left, and where it went."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.factories import BuyerFactory, ProviderFactory
from tests.vouchers.factories import (
    APRIL,
    FINALIZED_AT,
    charge_line,
    local,
    program_factory,
    redeem,
    voucher_factory,
)
from vouchers.models import LATE_INVOICE_GRACE, Redemption, Reversal
from vouchers.services import voucher_revoke, vouchers_expire, vouchers_reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_program(issuer):  # type: ignore[no-untyped-def]
    """Three companies: one spends in two hubs and two months and has an invoice voided,
    one lets its voucher expire, one is revoked."""
    program = program_factory(issuer, budget=10_000_000, coverage_share="0.2")
    spender, sleeper, revoked = BuyerFactory(slug="spender"), BuyerFactory(slug="sleeper"), BuyerFactory(slug="revoked")
    west, east = ProviderFactory(slug="west-cloud"), ProviderFactory(slug="east-cloud")
    voucher_factory(program, spender, face_value=1_000_000)
    short = voucher_factory(program, sleeper, face_value=500_000, valid_until=local(2026, 4, 1))
    gone = voucher_factory(program, revoked, face_value=300_000)
    redeem(spender, charge_line(west, 100_000, ref="a"), charge_line(east, 50_000, ref="b", hub="yangtze"), invoice="m")
    redeem(spender, charge_line(west, 200_000, period=APRIL), invoice="a", at=local(2026, 5, 2))
    redeem(spender, charge_line(west, 400_000), invoice="voided")
    vouchers_reverse(invoice_ref="voided", at=FINALIZED_AT + timedelta(days=1))
    redeem(sleeper, charge_line(east, 100_000, hub="yangtze"), invoice="s")
    vouchers_expire(now=local(2026, 4, 1) + LATE_INVOICE_GRACE)
    redeem(revoked, charge_line(west, 100_000), invoice="r")
    voucher_revoke(voucher=gone, by="test", now=FINALIZED_AT)
    assert short.pk
    return program


def _yuan(value: str) -> int:
    return int(Decimal(value) * 100)


def test_the_report_totals_add_up(issuer_client, busy_program) -> None:
    report = issuer_client.get(f"/api/v1/voucher-programs/{busy_program.pk}/report/").json()

    granted, redeemed, outstanding = _yuan(report["granted"]), _yuan(report["redeemed"]), _yuan(report["outstanding"])
    expired, revoked, left = _yuan(report["expired"]), _yuan(report["revoked"]), _yuan(report["left"])
    assert granted == 1_800_000
    assert redeemed == 30_000 + 40_000 + 20_000 + 20_000
    assert (expired, revoked, _yuan(report["reversed"])) == (480_000, 280_000, 80_000)
    assert granted == redeemed + outstanding + expired + revoked
    assert left == _yuan(report["budget"]) - redeemed - outstanding
    assert report["vouchers"] == {"active": 1, "exhausted": 0, "expired": 1, "revoked": 1}


def test_the_redeemed_total_is_the_redemption_rows_less_their_reversals(issuer_client, busy_program) -> None:
    report = issuer_client.get(f"/api/v1/voucher-programs/{busy_program.pk}/report/").json()

    rows = sum(Redemption.objects.filter(program=busy_program).values_list("amount", flat=True))
    reversed_ = sum(Reversal.objects.filter(redemption__program=busy_program).values_list("amount", flat=True))
    assert _yuan(report["redeemed"]) == rows - reversed_
    assert report["redemptions"] == 6


def test_spend_by_company_provider_hub_and_month_each_add_up_to_what_was_redeemed(issuer_client, busy_program) -> None:
    report = issuer_client.get(f"/api/v1/voucher-programs/{busy_program.pk}/report/").json()

    for section in ("by_company", "by_provider", "by_hub", "by_month"):
        assert sum(_yuan(row["redeemed"]) for row in report[section]) == _yuan(report["redeemed"]), section
    assert [(row["organization"], row["redeemed"]) for row in report["by_company"]] == [
        ("spender", "700.00"),
        ("revoked", "200.00"),
        ("sleeper", "200.00"),
    ]
    assert {row["hub"]: row["redeemed"] for row in report["by_hub"]} == {"ningxia": "800.00", "yangtze": "300.00"}
    assert [(row["month"], row["redeemed"]) for row in report["by_month"]] == [
        ("2026-03", "700.00"),
        ("2026-04", "400.00"),
    ]
    assert {row["provider"]: row["redeemed"] for row in report["by_provider"]} == {
        "west-cloud": "800.00",
        "east-cloud": "300.00",
    }


@pytest.mark.parametrize("ask", [{"path": "?format=csv"}, {"HTTP_ACCEPT": "text/csv"}])
def test_the_report_as_csv_traces_every_redemption_to_its_invoice_line_and_lease(
    issuer_client, busy_program, ask
) -> None:  # type: ignore[no-untyped-def]
    path = f"/api/v1/voucher-programs/{busy_program.pk}/report/" + ask.pop("path", "")

    response = issuer_client.get(path, **ask)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    totals = rows[rows.index(["totals"]) + 1 : rows.index(["totals"]) + 3]
    assert dict(zip(*totals, strict=True))["redeemed"] == "1100.00"
    header = rows.index(["redemptions"]) + 1
    trail = [dict(zip(rows[header], row, strict=True)) for row in rows[header + 1 :]]
    assert len(trail) == Redemption.objects.filter(program=busy_program).count()
    for row in trail:
        redemption = Redemption.objects.get(pk=row["redemption"])
        assert (row["invoice"], row["invoice_line"], row["lease"]) == (
            redemption.invoice_ref,
            redemption.line_ref,
            redemption.lease_id,
        )
    assert {row["reversed_amount"] for row in trail if row["invoice"] == "voided"} == {"800.00"}


def test_csv_cells_that_would_be_spreadsheet_formulas_are_defused(issuer_client, issuer) -> None:
    program = program_factory(issuer, name="=HYPERLINK(evil)")

    response = issuer_client.get(f"/api/v1/voucher-programs/{program.pk}/report/?format=csv")

    assert b"".join(response.streaming_content).decode().splitlines()[0] == "program,'=HYPERLINK(evil)"


def test_an_operator_sees_any_programs_report(operator_client, busy_program) -> None:
    assert operator_client.get(f"/api/v1/voucher-programs/{busy_program.pk}/report/").status_code == 200


def test_a_buyer_asking_for_a_report_gets_a_json_403_even_for_csv(buyer_client, busy_program) -> None:
    response = buyer_client.get(f"/api/v1/voucher-programs/{busy_program.pk}/report/?format=csv")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
