"""Subsidy claims: evidence per redemption, the issuer's review, rejected lines billed back once, payments."""

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db.models import F

from billing.models import Invoice, InvoiceLine
from billing.services.invoices import invoice_finalize, invoice_for_period
from billing.services.ledger import Purpose, balance_of
from billing.services.reconcile import reconcile
from settlements.models import SubsidyClaim
from settlements.services.claims import claims_build
from settlements.services.payouts import payout_line_settle, payout_run_create, payout_run_send
from tests.settlements.conftest import MAY_20
from tests.threads import run_concurrently
from vouchers.models import Redemption, Voucher

pytestmark = pytest.mark.django_db
APRIL = datetime(2026, 4, 15, tzinfo=UTC)


def _claim(paid_march: Any) -> SubsidyClaim:
    (claim,) = claims_build(at=APRIL, now=MAY_20)
    return claim


def test_a_claim_holds_every_redemption_of_the_month_as_evidence(
    paid_march: Any, issuer: Any, make_client: Any
) -> None:
    claim = _claim(paid_march)
    answer = make_client(issuer).get(f"/api/v1/claims/{claim.pk}/")

    assert answer.status_code == 200
    body = answer.json()
    assert body["claimed"] == f"{paid_march.voucher_credit / 100:.2f}"
    line = body["lines"][0]
    assert line["invoice_number"] == paid_march.number
    assert line["company_credit_code"] == paid_march.buyer.credit_code
    assert len(body["lines"]) == Redemption.objects.count()
    assert claims_build(at=APRIL, now=MAY_20) == []  # built once
    csv = make_client(issuer).get(f"/api/v1/claims/{claim.pk}/evidence.csv")
    assert csv.status_code == 200 and paid_march.number in csv.content.decode()


def test_a_month_from_usage_to_a_settled_payout_and_a_paid_claim_reconciles(
    paid_march: Any, provider: Any, account: Any, issuer: Any, operator: Any, make_client: Any
) -> None:
    claim = _claim(paid_march)
    review = make_client(issuer).post(f"/api/v1/claims/{claim.pk}/review/", {"approve_all": True}, format="json")
    assert review.status_code == 200, review.content
    half = paid_march.voucher_credit // 2
    for reference, amount in (("TRX-1", half), ("TRX-2", paid_march.voucher_credit - half)):
        paid = make_client(operator).post(
            f"/api/v1/claims/{claim.pk}/payments/",
            {"reference": reference, "amount": f"{amount / 100:.2f}"},
            format="json",
        )
        assert paid.status_code == 200, paid.content
    run = payout_run_create(at=datetime(2026, 3, 15, tzinfo=UTC), by="operator", now=MAY_20)
    payout_run_send(run_id=run.pk, by="operator", now=MAY_20)
    payout_line_settle(run_id=run.pk, line_id=run.lines.get().pk, paid=True, by="operator", now=MAY_20)

    claim.refresh_from_db()
    assert (claim.status, claim.received) == ("paid", paid_march.voucher_credit)
    assert balance_of(purpose=Purpose.VOUCHER_RECEIVABLE, organization=issuer) == 0
    assert balance_of(purpose=Purpose.CASH) == paid_march.voucher_credit - run.total
    assert reconcile() == []
    again = make_client(operator).post(
        f"/api/v1/claims/{claim.pk}/payments/", {"reference": "TRX-3", "amount": "0.01"}, format="json"
    )
    assert (again.status_code, again.json()["error"]["code"]) == (422, "overpayment")


def test_a_rejected_line_is_billed_back_to_the_company_once(
    paid_march: Any, buyer: Any, issuer: Any, make_client: Any
) -> None:
    claim = _claim(paid_march)
    line = claim.lines.first()
    voucher = Voucher.objects.get()
    remaining = voucher.remaining

    with time_machine.travel(MAY_20, tick=False):
        answer = make_client(issuer).post(
            f"/api/v1/claims/{claim.pk}/review/",
            {"reject": [{"line": str(line.pk), "reason_code": "usage_ineligible", "reason": "not AI work"}]},
            format="json",
        )
        twice = make_client(issuer).post(f"/api/v1/claims/{claim.pk}/review/", {"approve_all": True}, format="json")
        drafts = make_client(buyer).get("/api/v1/invoices/", {"status": "draft"}).json()["results"]

    assert answer.status_code == 200, answer.content
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "claim_already_reviewed")
    voucher.refresh_from_db()
    assert (voucher.remaining, voucher.rejected) == (remaining, line.amount)  # the budget's, not the voucher's
    assert balance_of(purpose=Purpose.CLAIM_REBILL, organization=buyer) == line.amount
    shown = [(x["kind"], x["amount"], x["description"]) for invoice in drafts for x in invoice["lines"]]
    assert shown == [
        (
            "claim_rejected",
            f"{line.amount / 100:.2f}",
            f"Voucher claim rejected ({claim.number}, usage_ineligible): not AI work",
        )
    ]
    may = invoice_finalize(
        invoice_id=invoice_for_period(buyer=buyer, at=MAY_20).pk, now=datetime(2026, 6, 5, tzinfo=UTC)
    )
    june = invoice_finalize(
        invoice_id=invoice_for_period(buyer=buyer, at=datetime(2026, 6, 15, tzinfo=UTC)).pk,
        now=datetime(2026, 7, 5, tzinfo=UTC),
    )
    rebilled = InvoiceLine.objects.filter(kind="claim_rejected")
    assert [(r.invoice_id, r.amount) for r in rebilled] == [(may.pk, line.amount)]
    assert (may.subtotal, may.amount_due, june.subtotal) == (line.amount, line.amount, 0)
    assert balance_of(purpose=Purpose.CLAIM_REBILL, organization=buyer) == 0
    assert reconcile() == []


def _reject(client: Any, claim: SubsidyClaim, line: Any) -> Any:
    return client.post(
        f"/api/v1/claims/{claim.pk}/review/",
        {"reject": [{"line": str(line.pk), "reason_code": "usage_ineligible", "reason": "not AI work"}]},
        format="json",
    )


def _figures(client: Any, program: Any) -> dict[str, int]:
    """The issuer's figures of the program from the API, in fen."""
    shown = client.get(f"/api/v1/voucher-programs/{program.pk}/").json()
    report = client.get(f"/api/v1/voucher-programs/{program.pk}/report/").json()
    fen = {key: round(Decimal(report[key]) * 100) for key in REPORT_FIGURES}
    return {**fen, "budget_left": round(Decimal(shown["budget_left"]) * 100), "api_committed": fen["committed"]}


REPORT_FIGURES = (
    "granted",
    "committed",
    "redeemed",
    "reversed",
    "outstanding",
    "expired",
    "revoked",
    "rejected",
    "left",
)


def test_a_rejected_line_of_an_active_voucher_goes_back_to_the_programs_budget_not_the_voucher(
    paid_march: Any, buyer: Any, issuer: Any, make_client: Any
) -> None:
    claim = _claim(paid_march)
    line = claim.lines.get()
    voucher = Voucher.objects.get()
    assert voucher.status == "active"
    client = make_client(issuer)
    before = _figures(client, voucher.program)

    with time_machine.travel(MAY_20, tick=False):
        answer = _reject(client, claim, line)

    assert answer.status_code == 200, answer.content
    after = _figures(client, voucher.program)
    fresh = Voucher.objects.get()
    assert (fresh.status, fresh.remaining, fresh.rejected) == ("active", voucher.remaining, line.amount)
    assert after["outstanding"] == before["outstanding"]  # the voucher cannot spend it again
    assert after["budget_left"] == after["left"] == before["left"] + line.amount
    assert after["committed"] == before["committed"] - line.amount
    assert after["redeemed"] == before["redeemed"] - line.amount
    assert (after["rejected"], after["reversed"]) == (line.amount, 0)
    assert after["granted"] == sum(after[key] for key in ("redeemed", "outstanding", "expired", "revoked", "rejected"))
    assert balance_of(purpose=Purpose.CLAIM_REBILL, organization=buyer) == line.amount
    assert reconcile() == []


def test_the_rejected_share_is_not_spent_again_by_the_voucher_on_the_next_invoice(
    paid_march: Any, buyer: Any, provider: Any, issuer: Any, make_client: Any
) -> None:
    from tests.billing.factories import leased, usage

    claim = _claim(paid_march)
    line = claim.lines.get()
    voucher = Voucher.objects.get()
    with time_machine.travel(MAY_20, tick=False):
        _reject(make_client(issuer), claim, line)
    lease = leased(buyer=buyer, provider=provider, at=MAY_20)
    usage(lease, MAY_20, seconds=8 * 3600)

    may = invoice_finalize(
        invoice_id=invoice_for_period(buyer=buyer, at=MAY_20).pk, now=datetime(2026, 6, 5, tzinfo=UTC)
    )

    assert may.voucher_credit > 0
    assert Voucher.objects.get().remaining == voucher.remaining - may.voucher_credit  # not a fen more to spend
    assert InvoiceLine.objects.filter(invoice=may, kind="claim_rejected").get().amount == line.amount


def test_a_replayed_review_changes_no_voucher_budget_or_bill(
    paid_march: Any, buyer: Any, issuer: Any, make_client: Any
) -> None:
    from billing.models import InvoiceAdjustment
    from vouchers.models import Reversal

    claim = _claim(paid_march)
    line = claim.lines.get()
    client = make_client(issuer)
    with time_machine.travel(MAY_20, tick=False):
        _reject(client, claim, line)
    voucher, figures = Voucher.objects.values().get(), _figures(client, Voucher.objects.get().program)

    with time_machine.travel(MAY_20, tick=False):
        again = _reject(client, claim, line)
        approve = client.post(f"/api/v1/claims/{claim.pk}/review/", {"approve_all": True}, format="json")

    assert (again.status_code, again.json()["error"]["code"]) == (409, "claim_already_reviewed")
    assert (approve.status_code, approve.json()["error"]["code"]) == (409, "claim_already_reviewed")
    assert Voucher.objects.values().get() == voucher
    assert _figures(client, Voucher.objects.get().program) == figures
    assert (Reversal.objects.count(), InvoiceAdjustment.objects.count()) == (1, 1)
    assert balance_of(purpose=Purpose.CLAIM_REBILL, organization=buyer) == line.amount
    assert reconcile() == []


def test_the_issuers_dashboard_shows_the_rejected_share_back_in_the_budget(
    paid_march: Any, issuer: Any, make_client: Any, client: Any
) -> None:
    from organizations.services import member_set

    claim = _claim(paid_march)
    line = claim.lines.get()
    program = Voucher.objects.get().program
    with time_machine.travel(MAY_20, tick=False):
        _reject(make_client(issuer), claim, line)
    figures = _figures(make_client(issuer), program)
    client.force_login(member_set(organization=issuer, username="issuer-member", password="unused").user)

    programs = client.get(f"/dashboard/{issuer.slug}/").content.decode()
    report = client.get(f"/dashboard/{issuer.slug}/programs/{program.pk}/").content.decode()

    def shown(page: str, figure: str) -> int:
        found = re.search(rf'data-figure="{figure}" data-value="([0-9.]+)"', page)
        assert found, figure
        return round(Decimal(found.group(1)) * 100)

    assert shown(programs, "program-committed") == figures["committed"] == program.budget - figures["left"]
    assert shown(programs, "program-redeemed") == figures["redeemed"] == paid_march.voucher_credit - line.amount
    assert shown(programs, "program-budget-left") == figures["budget_left"]
    assert shown(report, "report-rejected") == line.amount
    assert shown(report, "report-left") == figures["left"]


def test_reconcile_finds_a_rejected_share_given_back_to_the_voucher(
    paid_march: Any, issuer: Any, make_client: Any
) -> None:
    from vouchers.models import Reversal, VoucherProgram

    claim = _claim(paid_march)
    line = claim.lines.get()
    with time_machine.travel(MAY_20, tick=False):
        _reject(make_client(issuer), claim, line)
    # What the first release did: the amount back on the voucher, the program's commitment kept.
    Reversal.objects.update(returned=line.amount, rejected=0)
    Voucher.objects.update(remaining=F("remaining") + line.amount, rejected=0)
    VoucherProgram.objects.update(committed=F("committed") + line.amount)

    found = [(d.check, d.ledger, d.expected) for d in reconcile()]

    assert found == [("rejected claim line given back to the budget", 0, line.amount)]


def test_reconcile_finds_a_program_committing_other_than_its_vouchers(paid_march: Any) -> None:
    from vouchers.models import VoucherProgram

    program = Voucher.objects.get().program
    VoucherProgram.objects.update(committed=F("committed") - 1)

    found = [(d.check, d.subject, d.ledger, d.expected) for d in reconcile()]

    assert found == [("program committed", str(program.pk), program.committed - 1, program.committed)]


def test_an_invoice_with_a_rejected_claim_line_cannot_be_voided(paid_march: Any, issuer: Any, make_client: Any) -> None:
    from billing.services.invoices import invoice_void
    from core.exceptions import ConflictError

    claim = _claim(paid_march)
    line = claim.lines.first()
    make_client(issuer).post(
        f"/api/v1/claims/{claim.pk}/review/",
        {"reject": [{"line": str(line.pk), "reason_code": "duplicate"}]},
        format="json",
    )

    with pytest.raises(ConflictError):
        invoice_void(invoice_id=paid_march.pk, by="operator")
    assert Invoice.objects.get(pk=paid_march.pk).status == "paid"


def test_another_issuer_sees_no_claim(paid_march: Any, make_client: Any) -> None:
    from tests.factories import IssuerFactory

    claim = _claim(paid_march)
    other = make_client(IssuerFactory())

    assert other.get(f"/api/v1/claims/{claim.pk}/").status_code == 404
    assert other.get("/api/v1/claims/").json()["results"] == []


def test_the_issuer_downloads_its_claim_as_pdf_and_csv_from_its_dashboard(
    paid_march: Any, issuer: Any, client: Any
) -> None:
    from organizations.services import member_set

    claim = _claim(paid_march)
    member = member_set(organization=issuer, username="issuer-member", password="unused").user
    client.force_login(member)

    page = client.get(f"/dashboard/{issuer.slug}/")
    pdf = client.get(f"/dashboard/{issuer.slug}/claims/{claim.pk}/pdf/")
    csv = client.get(f"/dashboard/{issuer.slug}/claims/{claim.pk}/claim.csv")

    assert page.status_code == 200 and claim.number in page.content.decode()
    assert (pdf.status_code, pdf["Content-Type"], pdf.content[:5]) == (200, "application/pdf", b"%PDF-")
    assert csv.status_code == 200 and paid_march.number in csv.content.decode()


def test_the_operator_sees_money_in_transit_and_owed_balancing_to_the_ledger(
    paid_march: Any, provider: Any, account: Any, operator: Any
) -> None:
    from settlements.selectors import money_owed

    run = payout_run_create(at=datetime(2026, 3, 15, tzinfo=UTC), by="operator", now=MAY_20)
    payout_run_send(run_id=run.pk, by="operator", now=MAY_20)

    owed = money_owed(now=MAY_20)

    assert [(row["ledger"], row["records"]) for row in owed["rows"]] == [
        (run.total, run.total),
        (paid_march.voucher_credit, paid_march.voucher_credit),
        (0, 0),
        (0, 0),
    ]


def test_the_operators_dashboard_shows_what_is_owed_from_the_ledger_and_the_records(
    paid_march: Any, operator: Any, client: Any
) -> None:
    from organizations.services import member_set

    claim = _claim(paid_march)
    client.force_login(member_set(organization=operator, username="operator-member", password="unused").user)

    page = client.get(f"/dashboard/{operator.slug}/").content.decode()

    assert "Money owed" in page and claim.number in page
    owed = f"{paid_march.voucher_credit / 100:.2f}"
    assert page.count(owed) >= 2  # owed by the issuer, in the ledger and from the records


@pytest.mark.django_db(transaction=True)
def test_reviews_sent_at_once_review_the_claim_once_and_bill_a_line_back_once(
    paid_march: Any, buyer: Any, issuer: Any
) -> None:
    from core.exceptions import ConflictError
    from settlements.services.claims import claim_review

    claim = _claim(paid_march)
    line = claim.lines.first()
    outcomes: list[str] = []

    def review() -> None:
        try:
            claim_review(
                claim_id=claim.pk,
                approve_all=False,
                rejections=[{"line": line.pk, "reason_code": "duplicate", "reason": ""}],
                by="issuer",
            )
            outcomes.append("reviewed")
        except ConflictError as error:
            outcomes.append(error.code)

    run_concurrently([review] * 6)

    assert sorted(outcomes) == ["claim_already_reviewed"] * 5 + ["reviewed"]
    assert balance_of(purpose=Purpose.CLAIM_REBILL, organization=buyer) == line.amount
    from billing.models import InvoiceAdjustment

    assert InvoiceAdjustment.objects.filter(buyer=buyer).count() == 1
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_a_void_and_a_rejecting_review_at_once_never_give_the_voucher_share_twice(
    paid_march: Any, buyer: Any, issuer: Any
) -> None:
    from billing.services.invoices import invoice_void
    from core.exceptions import ConflictError
    from settlements.services.claims import claim_review

    claim = _claim(paid_march)
    line = claim.lines.first()
    outcomes: list[str] = []

    def review() -> None:
        claim_review(
            claim_id=claim.pk,
            approve_all=False,
            rejections=[{"line": line.pk, "reason_code": "duplicate", "reason": ""}],
            by="issuer",
        )
        outcomes.append("reviewed")

    def void() -> None:
        try:
            invoice_void(invoice_id=paid_march.pk, by="operator")
            outcomes.append("voided")
        except ConflictError as error:
            outcomes.append(error.code)

    run_concurrently([review, void])

    line.refresh_from_db()
    if "voided" in outcomes:
        assert line.status == "withdrawn"
        assert balance_of(purpose=Purpose.CLAIM_REBILL, organization=buyer) == 0
    else:
        assert sorted(outcomes) == ["claim_line_rejected", "reviewed"]
        assert line.status == "rejected"
    assert reconcile() == []


def test_reconcile_finds_a_voucher_whose_value_does_not_add_up(paid_march: Any) -> None:
    voucher = Voucher.objects.get()
    Voucher.objects.update(remaining=F("remaining") - 1)

    found = [(d.check, d.subject, d.ledger, d.expected) for d in reconcile()]

    assert found == [("voucher face value", str(voucher.pk), voucher.face_value - 1, voucher.face_value)]
