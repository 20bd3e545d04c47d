"""What ``reconcile`` checks of the money settlements moves (billing runs it through RECONCILE_CHECKS):

- every statement's net is paid once or still payable: the payout entries on each provider's
  payable equal the lines sent and not returned, in transit equals the lines sent and not
  settled, and no statement has more paid than its net (what was paid of an invoice voided
  since is owed back through the payable, and never clawed back beyond what was paid);
- every redemption of a month whose claims are built is on exactly one claim;
- every rejected claim line was given back to its program's budget (a rejected reversal of its
  amount) and billed to the company once (an adjustment of its amount), and nothing else was
  given back as rejected;
- every claim's approved amount is received or receivable: its payments add up to what it
  received, and cash holds what issuers paid less what providers were paid.
"""

from collections import defaultdict
from typing import Any

from django.db.models import Sum

from billing.models import Account, Invoice, InvoiceAdjustment, Leg, ProviderStatement
from billing.services.reconcile import Difference
from settlements.models import ClaimLine, ClaimPayment, PayoutItem, PayoutLine, SubsidyClaim
from vouchers.models import Redemption, Reversal

Purpose = Account.Purpose
OUT = (PayoutLine.Status.SENT, PayoutLine.Status.PAID)


def _legs(purpose: str, kind_prefix: str) -> dict[Any, int]:
    rows = (
        Leg.objects.filter(account__purpose=purpose, entry__kind__startswith=kind_prefix)
        .values_list("account__organization_id")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    return {organization: int(total) for organization, total in rows}


def _differ(check: str, ledger: dict[Any, int], expected: dict[Any, int]) -> list[Difference]:
    return [
        Difference(check, str(key or "platform"), ledger.get(key, 0), expected.get(key, 0))
        for key in sorted(set(ledger) | set(expected), key=str)
        if ledger.get(key, 0) != expected.get(key, 0)
    ]


def settlements_reconcile() -> list[Difference]:
    differences: list[Difference] = []
    paid_out: dict[Any, int] = defaultdict(int)
    for provider_id, total in (
        PayoutLine.objects.filter(status__in=OUT).values_list("provider_id").annotate(t=Sum("amount")).order_by()
    ):
        paid_out[provider_id] = int(total)
    differences += _differ("provider payouts", _legs(Purpose.PROVIDER_PAYABLE, "payout."), paid_out)
    in_transit = PayoutLine.objects.filter(status=PayoutLine.Status.SENT).aggregate(t=Sum("amount"))["t"] or 0
    paid = PayoutLine.objects.filter(status=PayoutLine.Status.PAID).aggregate(t=Sum("amount"))["t"] or 0
    received = ClaimPayment.objects.aggregate(t=Sum("amount"))["t"] or 0
    differences += _differ("payouts in transit", _legs(Purpose.PAYOUTS_IN_TRANSIT, ""), {None: -int(in_transit)})
    differences += _differ("cash", _legs(Purpose.CASH, ""), {None: int(received) - int(paid)})

    # What was paid of an invoice voided since is owed back (the provider's payable shows it) until
    # a clawback takes it: those items are checked apart, never clawed back beyond what was paid.
    paid_items = PayoutItem.objects.filter(active=True, line__status__in=OUT)
    for invoice_id, total in (
        paid_items.filter(invoice__status=Invoice.Status.VOID)
        .values_list("invoice_id")
        .annotate(t=Sum("amount"))
        .order_by()
    ):
        if total < 0:
            differences.append(Difference("clawed back beyond what was paid", str(invoice_id), total, 0))
    nets = dict(ProviderStatement.objects.values_list("pk", "net"))
    for statement_id, total in (
        paid_items.exclude(invoice__status=Invoice.Status.VOID)
        .values_list("statement_id")
        .annotate(t=Sum("amount"))
        .order_by()
    ):
        if total > max(nets.get(statement_id, 0), 0):
            differences.append(
                Difference("statement paid beyond its net", str(statement_id), total, nets[statement_id])
            )
    line_totals = PayoutLine.objects.values_list("pk", "amount").annotate(item_total=Sum("items__amount"))
    for line_id, amount, items in line_totals:
        if amount != (items or 0):
            differences.append(Difference("payout line items", str(line_id), int(items or 0), amount))

    for program_id, start, end in SubsidyClaim.objects.values_list("program_id", "period_start", "period_end"):
        missing = Redemption.objects.filter(
            program_id=program_id, redeemed_at__gte=start, redeemed_at__lt=end, claim_line__isnull=True
        ).values_list("pk", flat=True)
        differences += [Difference("redemption on no claim", str(pk), 0, 1, None) for pk in missing]

    differences += _rejected_lines()

    paid_by_claim = dict(ClaimPayment.objects.values_list("claim_id").annotate(t=Sum("amount")).order_by())
    issuer_payments = _legs(Purpose.VOUCHER_RECEIVABLE, "claim.payment")
    expected: dict[Any, int] = defaultdict(int)
    for claim_id, issuer_id, approved, got in SubsidyClaim.objects.values_list(
        "pk", "issuer_id", "approved", "received"
    ):
        expected[issuer_id] -= got
        if got != paid_by_claim.get(claim_id, 0) or got > approved:
            differences.append(Difference("claim received", str(claim_id), paid_by_claim.get(claim_id, 0), got))
    differences += _differ("issuer claim payments", issuer_payments, expected)
    return differences


def _rejected_lines() -> list[Difference]:
    """A rejected line's amount went back to the budget (not to the voucher) and is billed once."""
    lines = ClaimLine.objects.filter(status=ClaimLine.Status.REJECTED).values_list("pk", "redemption_id", "amount")
    given_back = dict(Reversal.objects.filter(rejected__gt=0).values_list("redemption_id", "rejected"))
    billed = dict(
        InvoiceAdjustment.objects.filter(reference__startswith="claim-line:").values_list("reference", "amount")
    )
    return _differ(
        "rejected claim line given back to the budget",
        given_back,
        {redemption_id: amount for _, redemption_id, amount in lines},
    ) + _differ("rejected claim line billed back", billed, {f"claim-line:{pk}": amount for pk, _, amount in lines})
