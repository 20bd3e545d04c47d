"""The world of the money state machine, and the check it makes after every step."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import time_machine
from django.db import connection
from django.db.models import Sum

from billing.models import Bank, CreditGrant, CreditHold, Invoice, Leg, ProviderStatement
from billing.services.bank.state import bank_state
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from marketplace.services import lease_start
from organizations.models import Organization
from pools.models import ResourcePool
from tests.billing.factories import leased
from tests.factories import BuyerFactory, IssuerFactory, ProviderFactory
from tests.reliability import money_model as m
from vouchers.models import Voucher, VoucherProgram, YearlyCapUsage

SETUP = datetime(2026, 1, 10, 0, tzinfo=UTC)
STARTED = SETUP + timedelta(hours=1)
START = datetime(2026, 1, 20, 2, tzinfo=UTC)  # 10:00 in Shanghai
BOOKED_HOURS = 3 * 365 * 24
FACTORS = [
    {"peak": Decimal("1.5"), "flat": Decimal("1"), "valley": Decimal("0.5")},
    {"peak": Decimal("1"), "flat": Decimal("1"), "valley": Decimal("1")},
    {"peak": Decimal("2.25"), "flat": Decimal("1.1"), "valley": Decimal("0.35")},
]


@dataclass
class World:
    """What every sequence starts from; made once per test, outside the sequences' savepoints."""

    buyers: list[Organization]
    providers: list[Organization]
    issuers: list[Organization]
    leases: list[Any]
    pools: dict[str, ResourcePool]


def build_world() -> World:
    buyers, providers = [BuyerFactory(), BuyerFactory(), BuyerFactory()], [ProviderFactory(), ProviderFactory()]
    issuers = [IssuerFactory(), IssuerFactory()]
    hubs = [{"hub_id": "jingjinji", "province": "Beijing"}, {"hub_id": "yangtze", "province": "Shanghai"}]
    leases = []
    for buyer in buyers[:2]:  # leases[2 * buyer + provider]
        for provider, hub in zip(providers, hubs, strict=True):
            # booked for three years: every sequence's usage falls inside the booked run
            lease = leased(buyer=buyer, provider=provider, at=SETUP, hours=BOOKED_HOURS, time_of_use=FACTORS[0], **hub)
            leases.append(lease_start(lease_id=lease.pk, by="test", now=STARTED))
    pools = {str(pool.pk): pool for pool in ResourcePool.objects.filter(pk__in=[lease.pool_id for lease in leases])}
    Bank.objects.create(organization=buyers[2], mode=Bank.Mode.PREPAID)  # its leases hold credit as they run
    return World(buyers, providers, issuers, leases, pools)


def new_card(number: str) -> str:
    """A card payment method made client-side (Stripe.js), as the buyer would."""
    card = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return stripe_client().v1.payment_methods.create(params={"type": "card", "card": card}).id  # type: ignore[typeddict-item]


def assert_books_agree(model: m.MoneyModel, *, prepaid: str, now: datetime) -> None:
    """The ledger sums to zero, every balance and state equals the model's, and ``reconcile`` is clean."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(amount), 0) FROM billing_leg")
        assert cursor.fetchone()[0] == 0, "the ledger does not sum to zero"
    ledger = {
        (purpose, str(organization) if organization else None): int(total)
        for purpose, organization, total in Leg.objects.values_list("account__purpose", "account__organization_id")
        .annotate(total=Sum("amount"))
        .order_by()
    }
    expected = {key: amount for key, amount in model.ledger.items() if amount}
    booked = {key: amount for key, amount in ledger.items() if amount}
    differing = {key: (booked.get(key), expected.get(key)) for key in booked.keys() | expected.keys()}
    assert booked == expected, {key: pair for key, pair in differing.items() if pair[0] != pair[1]}

    invoices = {
        (str(buyer), start): rest
        for buyer, start, *rest in Invoice.objects.values_list(
            "buyer_id", "period_start", "status", "subtotal", "voucher_credit", "bank_credit", "amount_due",
            "amount_paid", "amount_refunded",
        )
    }  # fmt: skip
    assert invoices == {
        key: [i.status, i.subtotal, i.voucher_credit, i.bank_credit, i.amount_due, i.amount_paid, i.amount_refunded]
        for key, i in model.invoices.items()
    }
    grants = {str(pk): remaining for pk, remaining in CreditGrant.objects.values_list("pk", "remaining")}
    assert grants == {pk: grant.remaining for pk, grant in model.grants.items()}
    holds = {
        str(lease): [amount, status == CreditHold.Status.ACTIVE]
        for lease, amount, status in CreditHold.objects.values_list("lease_id", "amount", "status")
    }
    assert holds == model.holds
    with time_machine.travel(now, tick=False):
        available = bank_state(buyer_id=prepaid, at=now).available
    assert available == model.available(buyer=prepaid, now=now)
    vouchers = {
        str(pk): (status, remaining, released)
        for pk, status, remaining, released in Voucher.objects.values_list("pk", "status", "remaining", "released")
    }
    assert vouchers == {pk: (v.status, v.remaining, v.released) for pk, v in model.vouchers.items()}
    programs = {str(p.pk): p.budget_left for p in VoucherProgram.objects.all()}
    assert programs == {pk: p.budget_left for pk, p in model.programs.items()}
    caps = {
        (str(buyer), str(issuer), year): redeemed
        for buyer, issuer, year, redeemed in YearlyCapUsage.objects.values_list("buyer", "issuer", "year", "redeemed")
        if redeemed
    }
    assert caps == {key: amount for key, amount in model.cap_used.items() if amount}
    statements = {
        (str(provider), start): net
        for provider, start, net in ProviderStatement.objects.values_list("provider_id", "period_start", "net")
        if net
    }
    assert statements == {key: net for key, net in model.statements.items() if net}
    blocked = {str(pk) for pk in Organization.objects.exclude(orders_blocked_reason="").values_list("pk", flat=True)}
    assert blocked == model.blocked
    assert reconcile() == []
