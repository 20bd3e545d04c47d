"""Recompute every balance two ways, from the ledger and from the rows it stands for; and check
that usage is complete: priced, billed once, by the version in force when it happened."""

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection
from django.db.models import F, Sum
from django.db.models.functions import Coalesce

from billing.cloudevents import GPU_SECONDS
from billing.models import (
    Account,
    BankMovement,
    CreditGrant,
    DepositResale,
    Invoice,
    InvoiceAdjustment,
    InvoiceLine,
    Leg,
    PaymentAttempt,
    ProviderStatement,
    Refund,
    StripeEvent,
    TopUp,
    UsageMetric,
    UsageRollup,
    UsageRollupDue,
)
from billing.rating import SECONDS_PER_HOUR, TOKENS_PER_UNIT
from marketplace.models import Lease
from pools.models import PricePlan
from vouchers.models import Redemption, Voucher, VoucherProgram

Purpose = Account.Purpose


@dataclass(frozen=True)
class Difference:
    check: str
    subject: str
    ledger: int | Decimal
    expected: int | Decimal
    labels: tuple[str, str] | None = ("ledger", "from the records")  # what the two figures are; None: no figures

    def __str__(self) -> str:
        if self.labels is None:
            return f"{self.check} {self.subject}"
        return f"{self.check} {self.subject}: {self.labels[0]} {self.ledger}, {self.labels[1]} {self.expected}"


# The entries of money settled outside billing (``settlements``: provider payouts, issuers' claim
# payments) are left out of billing's checks of the accounts they touch; settlements checks them
# against its own rows, through the checks it adds to RECONCILE_CHECKS at start-up.
SETTLEMENT_KINDS = ("payout.", "claim.payment")
RECONCILE_CHECKS: list[Callable[[], list[Difference]]] = []


def _ledger(purpose: str, *, accruals_only: bool = False) -> dict[Any, int]:
    legs = Leg.objects.filter(account__purpose=purpose)
    for prefix in SETTLEMENT_KINDS if accruals_only else ():
        legs = legs.exclude(entry__kind__startswith=prefix)
    rows = legs.values_list("account__organization_id").annotate(total=Sum("amount")).order_by()
    return {organization: int(total) for organization, total in rows}


def _compare(check: str, ledger: dict[Any, int], expected: dict[Any, int]) -> Iterator[Difference]:
    for subject in sorted(set(ledger) | set(expected), key=str):
        if ledger.get(subject, 0) != expected.get(subject, 0):
            yield Difference(check, str(subject or "platform"), ledger.get(subject, 0), expected.get(subject, 0))


def reconcile() -> list[Difference]:
    """Every difference found; an empty list means the books agree."""
    differences: list[Difference] = []

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT entry_id, currency, sum(amount) FROM billing_leg"
            " GROUP BY entry_id, currency HAVING sum(amount) <> 0"
        )
        for entry_id, currency, total in cursor.fetchall():
            differences.append(Difference("entry balance", f"{entry_id} {currency}", int(total), 0))

    refunded: dict[Any, int] = defaultdict(int)  # given back already
    recorded: dict[Any, int] = defaultdict(int)  # to give back, or given back
    for invoice_id, amount, status in Refund.objects.values_list("invoice_id", "amount", "status"):
        recorded[invoice_id] += amount
        refunded[invoice_id] += amount if status == Refund.Status.SUCCEEDED else 0
    receivable: dict[Any, int] = defaultdict(int)
    for invoice_id, number, buyer_id, status, due, paid, to_refund in Invoice.objects.exclude(
        status=Invoice.Status.DRAFT
    ).values_list("pk", "number", "buyer_id", "status", "amount_due", "amount_paid", "amount_refunded"):
        receivable[buyer_id] += (0 if status == Invoice.Status.VOID else due) - paid + refunded[invoice_id]
        if to_refund != recorded[invoice_id]:
            differences.append(Difference("invoice refunds", str(number), recorded[invoice_id], to_refund))
        if status == Invoice.Status.VOID and paid != recorded[invoice_id]:
            # A void invoice keeps nothing: what it received is refunded, or due to be.
            differences.append(Difference("void invoice keeps money", str(number), paid - recorded[invoice_id], 0))
    differences += _compare("buyer receivable", _ledger(Purpose.BUYER_RECEIVABLE), receivable)
    differences += _unbooked_payment_intents()

    statements = ProviderStatement.objects.values_list("provider_id").annotate(
        net=Sum("net"), commission=Sum("commission"), tax=Sum("tax")
    )
    differences += _compare(
        "provider payable",
        _ledger(Purpose.PROVIDER_PAYABLE, accruals_only=True),
        {p: -int(net) for p, net, _, _ in statements},
    )
    # The platform's revenue: its commission on the providers' lines and its share of resales, each
    # less the VAT it owes on them as the seller.
    resold = DepositResale.objects.exclude(line__invoice__status=Invoice.Status.VOID).aggregate(total=Sum("platform"))
    resale_tax = (
        InvoiceLine.objects.filter(kind=InvoiceLine.Kind.RESALE)
        .exclude(invoice__status__in=(Invoice.Status.DRAFT, Invoice.Status.VOID))
        .aggregate(total=Sum("tax"))
    )
    resold_net = int(resold["total"] or 0) - int(resale_tax["total"] or 0)
    differences += _compare(
        "platform revenue",
        _ledger(Purpose.PLATFORM_REVENUE),
        {None: -sum(int(commission) - int(tax) for _, _, commission, tax in statements) - resold_net},
    )
    differences += _vat()

    charged = PaymentAttempt.objects.filter(status=PaymentAttempt.Status.SUCCEEDED).aggregate(total=Sum("amount"))
    to_cards = Refund.objects.filter(method=Refund.Method.STRIPE, status=Refund.Status.SUCCEEDED).aggregate(
        total=Sum("amount")
    )
    topped_up = TopUp.objects.filter(status=TopUp.Status.SUCCEEDED).aggregate(total=Sum("amount"))["total"]
    differences += _compare(
        "stripe clearing",
        _ledger(Purpose.STRIPE_CLEARING),
        {None: int(charged["total"] or 0) - int(to_cards["total"] or 0) + int(topped_up or 0)},
    )
    differences += _bank()

    owed_by_issuers: dict[Any, int] = defaultdict(int)
    for issuer_id, amount, reversed_amount in Redemption.objects.values_list(
        "program__issuer_id", "amount", "reversal__amount"
    ):
        owed_by_issuers[issuer_id] += amount - (reversed_amount or 0)
    differences += _compare(
        "voucher receivable", _ledger(Purpose.VOUCHER_RECEIVABLE, accruals_only=True), owed_by_issuers
    )
    to_rebill: dict[Any, int] = defaultdict(int)
    for buyer_id, amount, status in InvoiceAdjustment.objects.values_list("buyer_id", "amount", "invoice__status"):
        to_rebill[buyer_id] += amount if status in (None, Invoice.Status.VOID) else 0
    differences += _compare("claim rebill", _ledger(Purpose.CLAIM_REBILL), to_rebill)
    differences += _voucher_budgets()

    mismatched = (
        Invoice.objects.exclude(status=Invoice.Status.DRAFT)
        .annotate(lines_total=Sum("lines__amount"))
        .exclude(subtotal=F("lines_total"))
        .exclude(subtotal=0, lines_total__isnull=True)
        .values_list("number", "subtotal", "lines_total")
    )
    for number, subtotal, lines_total in mismatched:
        differences.append(Difference("invoice lines", str(number), int(lines_total or 0), int(subtotal)))

    voucher_lines = InvoiceLine.objects.values_list("invoice_id").annotate(total=Sum("voucher_amount")).order_by()
    credits = dict(Invoice.objects.exclude(status=Invoice.Status.DRAFT).values_list("pk", "voucher_credit"))
    for invoice_id, total in voucher_lines:
        if int(total or 0) != credits.get(invoice_id, int(total or 0)):
            differences.append(Difference("voucher lines", str(invoice_id), int(total or 0), credits[invoice_id]))
    differences += _usage_beyond_leases()
    differences += _unpriced_usage()
    differences += _invoices_set_aside()
    differences += _usage_billed()
    differences += _usage_by_price_version()
    differences += _resales_credited_once()
    differences += _card_hours_within_pools()
    differences += _reserved_billed()
    differences += _cancel_fees_billed()
    differences += _compare("depositors' credit granted", _ledger(Account.Purpose.DEPOSIT_PAYABLE), {})
    for check in RECONCILE_CHECKS:
        differences += check()
    return differences


def _vat() -> list[Difference]:
    """VAT is complete: every invoice's tax is the sum of its lines' taxes, each line's tax is its
    amount's split (``billing.vat``), and the VAT payable booked for an invoice is its tax while it
    stands (finalized, paid, uncollectible) and nothing once it is void: booked once, reversed once."""
    from billing.vat import vat_split

    differences = []
    booked: dict[str, int] = {
        reference: -int(total)
        for reference, total in Leg.objects.filter(account__purpose=Purpose.VAT_PAYABLE)
        .values_list("entry__reference")
        .annotate(total=Sum("amount"))
        .order_by()
    }
    invoices = Invoice.objects.exclude(status=Invoice.Status.DRAFT).annotate(lines_tax=Coalesce(Sum("lines__tax"), 0))
    for invoice in invoices.only("pk", "number", "status", "tax").iterator():
        if invoice.tax != invoice.lines_tax:  # type: ignore[attr-defined]
            differences.append(Difference("invoice tax", str(invoice.number), invoice.lines_tax, invoice.tax))  # type: ignore[attr-defined]
        expected = 0 if invoice.status == Invoice.Status.VOID else invoice.tax
        got = booked.pop(invoice.reference, 0)
        if got != expected:
            differences.append(Difference("vat payable", str(invoice.number), got, expected))
    for reference, total in booked.items():  # VAT booked for no finalized invoice
        if total:
            differences.append(Difference("vat payable", reference, total, 0))
    for line_id, amount, rate, tax in (
        InvoiceLine.objects.exclude(invoice__status=Invoice.Status.DRAFT)
        .values_list("pk", "amount", "vat_rate", "tax")
        .iterator()
    ):
        if vat_split(amount, rate).tax != tax:
            differences.append(Difference("invoice line tax", str(line_id), tax, vat_split(amount, rate).tax))
    return differences


# Per (lease, hour, kind): what the rollups hold, and the most the lease's cards can do in a whole
# hour: cards x 3,600 x (1 + the tolerance) card-seconds; cards x 3,600 x its GPU model's tokens per
# second x the headroom tokens. Ingest caps each hour tighter, by the seconds the lease ran in it
# (``billing.services.usage._over_hourly_limits``); this bound holds for rows written by any path.
# Late rows hold what came after a bucket's row was billed: a bucket's rows sum to its events.
_BEYOND = """
WITH usage AS (
    SELECT r.lease_id, r.hour, r.metric = 'gpu_seconds' AS is_seconds, sum(r.quantity) AS reported
    FROM billing_usagerollup r GROUP BY 1, 2, 3
), speeds AS (
    SELECT * FROM unnest(%(models)s::text[], %(speeds)s::bigint[]) AS s (gpu_model_id, tokens_per_second)
)
SELECT u.lease_id, u.hour, u.is_seconds, u.reported, floor(l.cards * 3600 * CASE
    WHEN u.is_seconds THEN %(tolerance)s ELSE coalesce(s.tokens_per_second, %(most)s) * %(headroom)s END
) AS allowed
FROM usage u
JOIN marketplace_lease l ON l.id = u.lease_id
JOIN pools_resourcepool p ON p.id = l.pool_id
LEFT JOIN speeds s ON s.gpu_model_id = p.gpu_model_id
"""


def _usage_beyond_leases() -> list[Difference]:
    """Usage no lease could have used: more card-seconds or tokens in an hour than its cards can
    do. The books balance around such usage (a token flood); this catches it."""
    from django.conf import settings

    from pools.reference_data import TOKENS_PER_SECOND

    differences = []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM ({_BEYOND}) AS checked WHERE reported > allowed ORDER BY lease_id, hour",  # noqa: S608
            {
                "models": list(TOKENS_PER_SECOND),
                "speeds": list(TOKENS_PER_SECOND.values()),
                "most": max(TOKENS_PER_SECOND.values()),
                "tolerance": 1 + settings.USAGE_HOURLY_TOLERANCE,
                "headroom": settings.USAGE_TOKENS_HEADROOM,
            },
        )
        for lease_id, hour, is_seconds, reported, allowed in cursor.fetchall():
            kind = "card-seconds" if is_seconds else "tokens"
            subject = f"lease {lease_id} {hour:%Y-%m-%d %H}:00 UTC {kind}"
            differences.append(
                Difference(
                    "usage beyond the lease",
                    subject,
                    int(reported),
                    int(allowed),
                    ("reported", "the most its cards can do"),
                )
            )
    return differences


def _bucket(lease_id: Any, metric: str, model: str, hour: datetime) -> str:
    return f"lease {lease_id} {metric}{' ' + model if model else ''} {hour:%Y-%m-%d %H:%M} UTC"


def _unpriced_usage() -> list[Difference]:
    """Rolled-up usage without a price version (stored so by releases before hours were split at
    a version's start): no invoice can bill it until ``rebuild_usage_rollups`` prices it."""
    rows = (
        UsageRollup.objects.filter(price_plan__isnull=True)
        .exclude(quantity=0)
        .order_by("hour", "lease_id", "metric", "model")
        .values_list("lease_id", "metric", "model", "hour", "quantity")
    )
    return [
        Difference("usage without a price", _bucket(lease_id, metric, model, hour), 0, quantity, ("priced", "used"))
        for lease_id, metric, model, hour, quantity in rows
    ]


def _voucher_budgets() -> list[Difference]:
    """Each voucher's face value is what it has left, spent (less reversals), released and had
    rejected, and what it had rejected is its redemptions' rejected reversals (never back on the
    voucher); each program's committed budget is its vouchers' commitments (face value less what
    went back to the budget), so ``budget == committed + budget_left`` holds of the rows."""
    differences = []
    vouchers = Voucher.objects.annotate(
        spent=Coalesce(Sum("redemptions__amount"), 0) - Coalesce(Sum("redemptions__reversal__amount"), 0),
        rejections=Coalesce(Sum("redemptions__reversal__rejected"), 0),
    ).order_by("pk")
    commitments: dict[Any, int] = defaultdict(int)
    for pk, program_id, face, left, spent, released, rejected, rejections in vouchers.values_list(
        "pk", "program_id", "face_value", "remaining", "spent", "released", "rejected", "rejections"
    ):
        commitments[program_id] += face - released - rejected
        if face != left + spent + released + rejected:
            differences.append(Difference("voucher face value", str(pk), left + spent + released + rejected, face))
        if rejected != rejections:
            differences.append(Difference("voucher rejected", str(pk), rejected, rejections, ("voucher", "reversals")))
    for pk, committed in VoucherProgram.objects.order_by("pk").values_list("pk", "committed"):
        if committed != commitments.get(pk, 0):
            differences.append(
                Difference("program committed", str(pk), committed, commitments.get(pk, 0), ("program", "vouchers"))
            )
    return differences


def _invoices_set_aside() -> list[Difference]:
    """Drafts that finalizing set aside, with their reason: usage of a closed month left unbilled."""
    drafts = (
        Invoice.objects.filter(status=Invoice.Status.DRAFT)
        .exclude(hold_reason="")
        .order_by("period_start", "pk")
        .values_list("pk", "buyer_id", "period_start", "hold_reason")
    )
    return [
        Difference("invoice set aside", f"{pk} of buyer {buyer_id} from {start:%Y-%m-%d}: {reason}", 0, 0, None)
        for pk, buyer_id, start, reason in drafts
    ]


_BILLED_IN_FINALIZED_MONTHS = """
SELECT r.lease_id, r.metric, r.model, r.price_plan_id, sum(r.quantity)
FROM billing_usagerollup AS r JOIN billing_invoice AS i
  ON i.buyer_id = r.buyer_id AND r.hour >= i.period_start AND r.hour < i.period_end
WHERE NOT r.late AND r.price_plan_id IS NOT NULL AND i.status <> 'draft' AND NOT EXISTS (
    SELECT 1 FROM marketplace_lease AS rl
    WHERE rl.id = r.lease_id AND rl.commitment = 'reserved' AND r.hour < rl.price_locked_until
)
GROUP BY 1, 2, 3, 4
UNION ALL
SELECT lease_id, metric, model, price_plan_id, sum(billed_quantity) FROM billing_usagerollup
WHERE late AND billed_quantity <> 0 AND price_plan_id IS NOT NULL
GROUP BY 1, 2, 3, 4
"""

_ON_INVOICE_LINES = """
SELECT lease_id, metric, model, price_plan_id,
       sum(quantity * CASE unit WHEN %(card_hour)s THEN %(seconds)s ELSE %(tokens)s END), count(*)
FROM billing_invoiceline WHERE kind NOT IN ('reserved', 'cancel_fee') GROUP BY 1, 2, 3, 4
"""


def _usage_billed() -> list[Difference]:
    """Every priced quantity rolled up in a finalized month (or a late row's billed part) is on
    exactly one invoice line, per lease, metric, model and price version. Lines hold quantities
    in card-hours or millions of tokens to 10 places: each line may be off by half the last place."""
    rolled: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    lines: dict[tuple[Any, ...], tuple[Decimal, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_BILLED_IN_FINALIZED_MONTHS)
        for *key, quantity in cursor.fetchall():
            rolled[tuple(key)] += quantity
        units: dict[str, Any] = {
            "card_hour": str(InvoiceLine.Unit.CARD_HOUR),
            "seconds": SECONDS_PER_HOUR,
            "tokens": TOKENS_PER_UNIT,
        }
        cursor.execute(_ON_INVOICE_LINES, units)
        for *key, quantity, count in cursor.fetchall():
            lines[tuple(key)] = (quantity, count)
    differences = []
    for key in sorted(set(rolled) | set(lines), key=str):
        billed, count = lines.get(key, (Decimal(0), 0))
        per_unit = SECONDS_PER_HOUR if key[1] == UsageMetric.GPU_SECONDS else TOKENS_PER_UNIT
        if abs(billed - rolled.get(key, Decimal(0))) > count * per_unit * Decimal("5e-11"):
            lease_id, metric, model, plan_id = key
            differences.append(
                Difference(
                    "usage billed",
                    f"lease {lease_id} {metric}{' ' + model if model else ''} price version {plan_id}",
                    billed,
                    rolled.get(key, Decimal(0)),
                    ("on invoice lines", "rolled up in finalized months"),
                )
            )
    return differences


# The price version of each event, found here without the rollup's code: in the lease's booked
# hours the version it was placed on (a batch token job's run to its deadline; a pay-as-you-go
# token account books none: only until that version reaches running leases); after them the
# newest version that reached running leases at or before the event (the pool's first, for usage
# stamped before the pool was listed).
_EVENTS_BY_VERSION = """
WITH h AS (SELECT * FROM unnest(%s::uuid[], %s::timestamptz[]) AS h (pool_id, hour))
SELECT e.lease_id, h.hour, e.type, e.model, v.id, sum(e.quantity), sum(e.input_tokens), sum(e.output_tokens)
FROM h JOIN marketplace_lease AS l ON l.pool_id = h.pool_id
JOIN marketplace_order AS o ON o.id = l.order_id
JOIN pools_priceplan AS lp ON lp.id = l.price_plan_id
JOIN billing_usageevent AS e ON e.lease_id = l.id AND e.time >= h.hour AND e.time < h.hour + interval '1 hour'
CROSS JOIN LATERAL (
    SELECT CASE WHEN e.time < l.price_locked_until THEN l.price_plan_id ELSE coalesce(
        (SELECT p.id FROM pools_priceplan AS p WHERE p.pool_id = l.pool_id AND p.running_from <= e.time
         ORDER BY p.version DESC LIMIT 1),
        (SELECT p.id FROM pools_priceplan AS p WHERE p.pool_id = l.pool_id ORDER BY p.version LIMIT 1)
    ) END AS id
) AS v
GROUP BY 1, 2, 3, 4, 5
"""

_ROLLED_UP_BY_VERSION = """
WITH h AS (SELECT * FROM unnest(%s::uuid[], %s::timestamptz[]) AS h (pool_id, hour))
SELECT r.lease_id, r.hour, r.metric, r.model, r.price_plan_id, sum(r.quantity)
FROM h JOIN billing_usagerollup AS r ON r.pool_id = h.pool_id AND r.hour = h.hour
GROUP BY 1, 2, 3, 4, 5
"""


def _usage_by_price_version() -> list[Difference]:
    """In every hour in which a lease's price version may change (a version takes effect or reaches
    running leases, a lease's price lock ends), each version's rolled-up usage (the row its month
    billed and any late row) equals the raw events from its start, recounted from the events;
    hours still waiting for their rollup are left out."""
    versions = dict(PricePlan.objects.values_list("pk", "version"))
    moments = [
        *PricePlan.objects.values_list("pool_id", "effective_from"),
        *PricePlan.objects.values_list("pool_id", "running_from"),
        # A lock ends where the version may change: only on pools with more than one version.
        *Lease.objects.filter(pool_id__in=PricePlan.objects.filter(version=2).values("pool_id")).values_list(
            "pool_id", "price_locked_until"
        ),
    ]
    hours = sorted({(pool_id, at.replace(minute=0, second=0, microsecond=0)) for pool_id, at in moments})
    if not hours:
        return []
    arrays: list[Any] = [[pool_id for pool_id, _ in hours], [hour for _, hour in hours]]
    used: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    rolled: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    with connection.cursor() as cursor:
        cursor.execute(_EVENTS_BY_VERSION, arrays)
        for lease_id, hour, event_type, model, plan_id, seconds, inputs, outputs in cursor.fetchall():
            if event_type == GPU_SECONDS:
                used[(lease_id, hour, UsageMetric.GPU_SECONDS, "", plan_id)] += seconds
            else:
                used[(lease_id, hour, UsageMetric.INPUT_TOKENS, model, plan_id)] += inputs
                used[(lease_id, hour, UsageMetric.OUTPUT_TOKENS, model, plan_id)] += outputs
        cursor.execute(_ROLLED_UP_BY_VERSION, arrays)
        for *key, quantity in cursor.fetchall():
            rolled[tuple(key)] += quantity
    due = set(UsageRollupDue.objects.values_list("lease_id", "hour"))
    differences = []
    for key in sorted(set(used) | set(rolled), key=str):
        lease_id, hour, metric, model, plan_id = key
        if used.get(key, 0) == rolled.get(key, 0) or (lease_id, hour) in due:
            continue
        version = f"version {versions[plan_id]}" if plan_id else "no price version"
        differences.append(
            Difference(
                "usage by price version",
                f"{_bucket(lease_id, metric, model, hour)} {version}",
                rolled.get(key, Decimal(0)),
                used.get(key, Decimal(0)),
                ("rolled up", "used"),
            )
        )
    return differences


def _unbooked_payment_intents() -> list[Difference]:
    """Every PaymentIntent Stripe told us succeeded is booked: its attempt or its top-up is no longer
    pending. (A webhook whose processing failed leaves it pending, unbooked. A success told for an
    attempt already decided failed is a replay that changes nothing, as the webhook tests require.)"""
    told = {
        (event.get("data") or {}).get("object", {}).get("id")
        for event in StripeEvent.objects.filter(type="payment_intent.succeeded").values_list("payload", flat=True)
    }
    told.discard(None)
    unbooked = [
        *PaymentAttempt.objects.filter(payment_intent_id__in=told, status=PaymentAttempt.Status.PENDING).values_list(
            "payment_intent_id", "amount"
        ),
        *TopUp.objects.filter(payment_intent_id__in=told, status=TopUp.Status.PENDING).values_list(
            "payment_intent_id", "amount"
        ),
    ]
    return [Difference("payment intent succeeded, not booked", str(pi), 0, int(amount)) for pi, amount in unbooked]


def _bank() -> list[Difference]:
    """Each buyer's credit: its grants' remaining is its bank liability, paid and granted apart;
    what it drew and its invoices booked meet in its bank clearing; expiries are the breakage;
    credit the platform gave is its promotion expense."""
    differences: list[Difference] = []
    remaining: dict[str, dict[Any, int]] = {Purpose.BANK_PAID: defaultdict(int), Purpose.BANK_GRANTED: defaultdict(int)}
    given = 0
    for buyer_id, source, amount, left, returned in CreditGrant.objects.values_list(
        "buyer_id", "source", "amount", "remaining", "refund"
    ):
        paid = source in CreditGrant.PAID
        remaining[Purpose.BANK_PAID if paid else Purpose.BANK_GRANTED][buyer_id] -= left
        # Money an invoice gave back as credit is the buyer's; a deposit's credit is resale revenue.
        given += 0 if paid or returned or source == CreditGrant.Source.CAPACITY_DEPOSIT else amount
    for purpose, expected in remaining.items():
        differences += _compare(f"bank {purpose}", _ledger(purpose), expected)

    clearing: dict[Any, int] = defaultdict(int)
    for buyer_id, total in (
        BankMovement.objects.filter(reason__in=[BankMovement.Reason.DRAW, BankMovement.Reason.DRAW_REVERSED])
        .values_list("buyer_id")
        .annotate(total=Sum("amount"))
        .order_by()
    ):
        clearing[buyer_id] += int(total)
    for buyer_id, total in (
        Invoice.objects.exclude(status__in=[Invoice.Status.DRAFT, Invoice.Status.VOID])
        .values_list("buyer_id")
        .annotate(total=Sum("bank_credit"))
        .order_by()
    ):
        clearing[buyer_id] += int(total)
    differences += _compare("bank clearing", _ledger(Purpose.BANK_CLEARING), clearing)

    expired = BankMovement.objects.filter(reason=BankMovement.Reason.EXPIRY).aggregate(total=Sum("amount"))["total"]
    differences += _compare("breakage", _ledger(Purpose.BREAKAGE), {None: int(expired or 0)})
    differences += _compare("promotion expense", _ledger(Purpose.PROMOTION_EXPENSE), {None: given})
    return differences


# Resale lines of invoices not voided, and what was recorded and granted for each.
_RESALES = """
SELECT l.id, l.amount, count(d.id), coalesce(sum(d.amount), 0), coalesce(sum(d.credit), 0),
       coalesce(sum(g.amount), 0), count(g.id)
FROM billing_invoiceline AS l JOIN billing_invoice AS i ON i.id = l.invoice_id
LEFT JOIN billing_depositresale AS d ON d.line_id = l.id
LEFT JOIN billing_creditgrant AS g ON g.id = d.grant_id
WHERE l.kind = 'resale' AND i.status <> 'void'
GROUP BY 1, 2
"""

# Per pool, the most cards its card leases book at once (a lease on deposited cards books none of
# its own; a booking cancelled before its start never held any).
_OVERBOOKED = """
WITH moves AS (
    SELECT l.pool_id, l.start_at AS at, l.cards AS change FROM marketplace_lease AS l
    WHERE l.endpoint_id IS NULL AND l.deposit_id IS NULL AND coalesce(l.ended_at, l.end_at) > l.start_at
    UNION ALL
    SELECT l.pool_id, least(coalesce(l.ended_at, l.end_at), l.end_at), -l.cards FROM marketplace_lease AS l
    WHERE l.endpoint_id IS NULL AND l.deposit_id IS NULL AND coalesce(l.ended_at, l.end_at) > l.start_at
), running AS (
    SELECT pool_id, sum(change) OVER (PARTITION BY pool_id ORDER BY at, change ROWS UNBOUNDED PRECEDING) AS booked
    FROM moves
)
SELECT r.pool_id, max(r.booked), p.cards FROM running AS r JOIN pools_resourcepool AS p ON p.id = r.pool_id
GROUP BY r.pool_id, p.cards HAVING max(r.booked) > p.cards
"""


def _resales_credited_once() -> list[Difference]:
    """Every resale line of an invoice not voided has one resale record whose amount is the line's, and
    its depositor's credit was granted once (``billing.reservations``)."""
    differences = []
    with connection.cursor() as cursor:
        cursor.execute(_RESALES)
        for line_id, amount, records, recorded, credit, granted, grants in cursor.fetchall():
            if records != 1 or recorded != amount:
                differences.append(Difference("resale recorded", str(line_id), int(recorded), int(amount)))
            elif granted != credit or grants > 1:
                differences.append(Difference("resale credited", str(line_id), int(granted), int(credit)))
    return differences


def _card_hours_within_pools() -> list[Difference]:
    """No pool's card-hours are booked beyond its cards at any moment."""
    with connection.cursor() as cursor:
        cursor.execute(_OVERBOOKED)
        return [
            Difference("cards booked beyond the pool", str(pool_id), int(booked), int(cards))
            for pool_id, booked, cards in cursor.fetchall()
        ]


# A reserved card lease's booked hours, as ``billing.reservations`` bills them, restated here without
# its code: from ``start_at`` to ``price_locked_until`` (to when the provider or its pool ended it, if
# it did), a booking cancelled before its start billing none (its fee instead).
_RESERVED_LEASES = """
SELECT l.id, l.buyer_id, l.cards, l.start_at, l.price_locked_until, l.price_plan_id, l.ended_at,
       l.status = 'cancelled' AND l.ended_at IS NOT NULL AND l.ended_at < l.start_at AS cancelled_early,
       CASE WHEN l.status IN ('preempted', 'failed') AND l.ended_at IS NOT NULL
            THEN greatest(least(l.ended_at, l.price_locked_until), l.start_at)
            ELSE l.price_locked_until END AS billed_until
FROM marketplace_lease AS l
WHERE l.commitment = 'reserved' AND l.endpoint_id IS NULL
"""

# Per (reserved lease, finalized invoice of its buyer): the card-seconds it booked in the invoice's
# month, and those its ``reserved`` lines bill there (lines on any invoice: one the booking has no
# hours in is a difference too). A void invoice keeps its lines and its month is never billed again
# (one invoice per buyer and month): they stay the month's record, as usage lines do.
_RESERVED_BILLED = f"""
WITH leases AS ({_RESERVED_LEASES}), booked AS (
    SELECT b.id AS lease_id, i.id AS invoice_id,
           b.cards * extract(epoch FROM least(b.billed_until, i.period_end) - greatest(b.start_at, i.period_start))
           AS seconds
    FROM leases AS b JOIN billing_invoice AS i
      ON i.buyer_id = b.buyer_id AND i.period_start < b.billed_until AND i.period_end > b.start_at
    WHERE NOT b.cancelled_early AND i.status <> 'draft'
), billed AS (
    SELECT lease_id, invoice_id, sum(quantity) * %(seconds)s AS seconds, count(*) AS lines
    FROM billing_invoiceline WHERE kind = 'reserved' GROUP BY 1, 2
)
SELECT coalesce(k.lease_id, d.lease_id), i.period_start, i.number, coalesce(d.seconds, 0), coalesce(k.seconds, 0)
FROM booked AS k FULL JOIN billed AS d ON d.lease_id = k.lease_id AND d.invoice_id = k.invoice_id
JOIN billing_invoice AS i ON i.id = coalesce(k.invoice_id, d.invoice_id)
WHERE abs(coalesce(d.seconds, 0) - coalesce(k.seconds, 0)) > coalesce(d.lines, 0) * %(seconds)s * 5e-11
ORDER BY i.period_start, 1
"""  # noqa: S608 - built of this module's constants

# Per booking cancelled before its start whose buyer's invoice of the month it was cancelled in is
# finalized, and per invoice holding ``cancel_fee`` lines: its card-seconds booked and the exact fee
# in fen (``RESERVED_CANCEL_FEE_RATE`` of the booked hours at each local hour's price less the reserved
# discount), and what its fee lines bill there.
_CANCEL_FEES_BILLED = f"""
WITH cancelled AS (SELECT * FROM ({_RESERVED_LEASES}) AS l WHERE l.cancelled_early), due AS (
    SELECT c.id AS lease_id, i.id AS invoice_id,
           c.cards * extract(epoch FROM c.price_locked_until - c.start_at) AS seconds,
           %(fee)s * (1 - p.reserved_discount) * c.cards * (
               SELECT coalesce(sum(
                   extract(epoch FROM least(h + interval '1 hour', c.price_locked_until) - greatest(h, c.start_at))
                   * (p.hour_prices ->> extract(hour FROM h AT TIME ZONE %(zone)s)::int)::numeric
               ), 0)
               FROM generate_series(
                   date_trunc('hour', c.start_at), c.price_locked_until - interval '1 microsecond', interval '1 hour'
               ) AS h
           ) / %(seconds)s * 100 AS fee
    FROM cancelled AS c
    JOIN billing_invoice AS i
      ON i.buyer_id = c.buyer_id AND i.period_start <= c.ended_at AND c.ended_at < i.period_end
    JOIN pools_priceplan AS p ON p.id = c.price_plan_id
    WHERE i.status <> 'draft'
), billed AS (
    SELECT lease_id, invoice_id, count(*) AS lines, sum(quantity) * %(seconds)s AS seconds, sum(amount) AS amount
    FROM billing_invoiceline WHERE kind = 'cancel_fee' GROUP BY 1, 2
)
SELECT coalesce(u.lease_id, d.lease_id), i.period_start, i.number, u.lease_id IS NOT NULL AND u.seconds > 0,
       coalesce(d.lines, 0), coalesce(d.seconds, 0), coalesce(d.amount, 0), coalesce(u.seconds, 0), coalesce(u.fee, 0)
FROM due AS u FULL JOIN billed AS d ON d.lease_id = u.lease_id AND d.invoice_id = u.invoice_id
JOIN billing_invoice AS i ON i.id = coalesce(u.invoice_id, d.invoice_id)
ORDER BY i.period_start, 1
"""  # noqa: S608 - built of this module's constants


def _month(period_start: datetime) -> str:
    from core.timezones import local_zone

    return f"{period_start.astimezone(local_zone()):%Y-%m}"


def _card_hours(seconds: Decimal) -> Decimal:
    hours = (Decimal(seconds) / SECONDS_PER_HOUR).quantize(Decimal("1e-10"))
    return hours.quantize(Decimal(1)) if hours == hours.to_integral_value() else hours.normalize()


def _reserved_billed() -> list[Difference]:
    """Every finalized month of a reserved booking carries ``reserved`` lines for exactly the card-hours
    it booked in that month, used or not, and no lines bill hours it did not book (``billing.reservations``).
    Lines hold card-hours to 10 places: each may be off by half the last place."""
    with connection.cursor() as cursor:
        cursor.execute(_RESERVED_BILLED, {"seconds": SECONDS_PER_HOUR})
        rows = cursor.fetchall()
    return [
        Difference(
            "reserved card-hours",
            f"lease {lease_id} {_month(period_start)} (invoice {number})",
            _card_hours(billed),
            _card_hours(booked),
            ("on reserved lines", "booked"),
        )
        for lease_id, period_start, number, billed, booked in rows
    ]


def _cancel_fees_billed() -> list[Difference]:
    """Every booking cancelled before its start carries one ``cancel_fee`` line, on its buyer's invoice
    of the month it was cancelled in (once that is finalized), billing its booked card-hours at the fee:
    the amount may differ from the exact fee by the rounding to the fen and the line's rate's 10 places."""
    from django.conf import settings

    from core.timezones import local_zone

    differences = []
    parameters: dict[str, Any] = {
        "seconds": SECONDS_PER_HOUR,
        "fee": settings.RESERVED_CANCEL_FEE_RATE,
        "zone": str(local_zone()),
    }
    with connection.cursor() as cursor:
        cursor.execute(_CANCEL_FEES_BILLED, parameters)
        rows = cursor.fetchall()
    for lease_id, period_start, number, due, lines, seconds, amount, booked, fee in rows:
        expected_lines, expected = (1, int(Decimal(fee).quantize(Decimal(1), ROUND_HALF_UP))) if due else (0, 0)
        slack = Decimal("0.5") + _card_hours(seconds) * Decimal("5e-9")  # fen
        if lines != expected_lines or (due and abs(amount - Decimal(fee)) > slack) or (not due and amount):
            subject = f"lease {lease_id} {'cancelled ' if due else ''}{_month(period_start)} (invoice {number})"
            differences.append(
                Difference(
                    "cancellation fee",
                    f"{subject}: {lines} line{'' if lines == 1 else 's'}",
                    int(amount),
                    expected,
                    ("on cancel_fee lines", "the fee of its booking"),
                )
            )
        elif abs(seconds - booked) > lines * SECONDS_PER_HOUR * Decimal("5e-11"):
            subject = f"lease {lease_id} cancelled {_month(period_start)} (invoice {number})"
            differences.append(
                Difference(
                    "cancellation fee",
                    f"{subject} card-hours",
                    _card_hours(seconds),
                    _card_hours(booked),
                    ("on cancel_fee lines", "booked"),
                )
            )
    return differences
