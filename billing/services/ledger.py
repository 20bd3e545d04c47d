"""Posting to the double-entry ledger. Every other money path posts through here."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import Account, JournalEntry, Leg
from organizations.models import Organization

Purpose = Account.Purpose


@dataclass(frozen=True)
class Credit:
    """What a voucher or a bank credit paid of an invoice, as the ledger must record it."""

    amount: int
    account: Account  # the account that owes or gives it (voucher receivable of an issuer, bank clearing)
    description: str


# Accounts never change once made: each process remembers the ones it has seen
# committed (not before: a rolled-back transaction may have made one).
_accounts: dict[tuple[Any, str, str], Account] = {}


def account_for(*, purpose: str, organization: Organization | None = None, currency: str = "CNY") -> Account:
    """The account of ``organization`` (None: the platform) for ``purpose``, made on first use."""
    organization_id = organization.pk if organization else None
    return accounts_for(purpose=purpose, organization_ids=[organization_id], currency=currency)[organization_id]


def accounts_for(*, purpose: str, organization_ids: Iterable[Any], currency: str = "CNY") -> dict[Any, Account]:
    """The accounts of these organizations (None: the platform) for ``purpose``, made on first use.

    Missing accounts are made one by one in a fixed order: a transaction that
    makes one waits for any other making the same until that one commits, and
    in a fixed order no two can wait for each other.
    """
    found = {}
    missing = []
    for organization_id in sorted(set(organization_ids), key=str):
        account = _accounts.get((organization_id, purpose, currency))
        if account is None:
            missing.append(organization_id)
        else:
            found[organization_id] = account
    if not missing:
        return found
    owners = Q(organization_id__in=[pk for pk in missing if pk is not None])
    if None in missing:
        owners |= Q(organization__isnull=True)
    stored = {
        account.organization_id: account
        for account in Account.objects.filter(owners, purpose=purpose, currency=currency)
    }
    for organization_id in missing:
        account = stored.get(organization_id)
        if account is None:
            try:
                with transaction.atomic():
                    account = Account.objects.create(
                        organization_id=organization_id, purpose=purpose, currency=currency
                    )
            except IntegrityError:  # made concurrently
                account = Account.objects.get(organization_id=organization_id, purpose=purpose, currency=currency)
        found[organization_id] = account
    if len(_accounts) > 100_000:
        _accounts.clear()
    transaction.on_commit(lambda: _accounts.update({(pk, purpose, currency): found[pk] for pk in missing}))
    return found


@dataclass(frozen=True)
class NewEntry:
    """An entry to post: its legs are (account, fen) pairs, positive debits, negative credits."""

    kind: str
    description: str
    reference: str
    legs: Sequence[tuple[Account, int]]
    at: datetime | None = None
    reverses: JournalEntry | None = None


@transaction.atomic
def entries_post(*, entries: Sequence[NewEntry]) -> list[JournalEntry | None]:
    """Post balanced entries, all with two statements. Zero legs are dropped; an entry with
    nothing left is not posted (None in its place)."""
    now = timezone.now()
    posted: list[JournalEntry | None] = []
    legs: list[Leg] = []
    for new in entries:
        kept = [(account, amount) for account, amount in new.legs if amount]
        if not kept:
            posted.append(None)
            continue
        if sum(amount for _, amount in kept) != 0:
            raise ValueError(f"{new.kind} {new.reference}: legs sum to {sum(a for _, a in kept)}, not 0")
        if len(kept) < 2:
            raise ValueError(f"{new.kind} {new.reference}: an entry needs two legs")
        entry = JournalEntry(
            kind=new.kind,
            description=new.description[:300],
            reference=new.reference,
            posted_at=new.at or now,
            reverses=new.reverses,
        )
        posted.append(entry)
        legs += [
            Leg(entry=entry, account=account, amount=amount, currency=account.currency) for account, amount in kept
        ]
    JournalEntry.objects.bulk_create([entry for entry in posted if entry is not None])
    Leg.objects.bulk_create(legs)
    return posted


def entry_post(
    *,
    kind: str,
    description: str,
    reference: str,
    legs: Sequence[tuple[Account, int]],
    at: datetime | None = None,
    reverses: JournalEntry | None = None,
) -> JournalEntry | None:
    """Post one balanced entry (see ``entries_post``)."""
    new = NewEntry(kind=kind, description=description, reference=reference, legs=legs, at=at, reverses=reverses)
    return entries_post(entries=[new])[0]


@transaction.atomic
def entry_reverse(*, entry: JournalEntry, reason: str, at: datetime | None = None) -> JournalEntry:
    """Undo an entry with its mirror image; the original stays as it was."""
    legs = [(leg.account, -leg.amount) for leg in entry.legs.select_related("account")]
    reversal = entry_post(
        kind=f"{entry.kind}.reversal",
        description=f"Reversal of {entry.kind} {entry.reference}: {reason}",
        reference=entry.reference,
        legs=legs,
        at=at,
        reverses=entry,
    )
    assert reversal is not None
    return reversal


def account_balance(account: Account) -> int:
    return int(Leg.objects.filter(account=account).aggregate(total=Sum("amount"))["total"] or 0)


def balance_of(*, purpose: str, organization: Organization | None = None, currency: str = "CNY") -> int:
    total = Leg.objects.filter(
        account__purpose=purpose, account__organization=organization, account__currency=currency
    ).aggregate(total=Sum("amount"))["total"]
    return int(total or 0)
