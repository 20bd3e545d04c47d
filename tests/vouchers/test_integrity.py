"""The database keeps voucher money consistent even against writes that skip the services;
and the app keeps to its layer."""

import ast
import uuid
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction

from marketplace.models import Workload as MarketplaceWorkload
from tests.conftest import REPO
from tests.vouchers.factories import charge_line, redeem, voucher_factory
from vouchers.models import Redemption, Voucher, VoucherProgram, Workload


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "changes"),
    [
        (VoucherProgram, {"committed": 10**12}),
        (VoucherProgram, {"coverage_share": 2}),
        (Voucher, {"remaining": -1}),
        (Voucher, {"remaining": 10**12}),
        (Voucher, {"status": "exhausted"}),
        (Voucher, {"status": "expired"}),
    ],
)
def test_the_database_refuses_voucher_money_out_of_bounds(buyer, model, changes) -> None:  # type: ignore[no-untyped-def]
    voucher = voucher_factory(buyer=buyer)
    pk = voucher.pk if model is Voucher else voucher.program_id

    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.filter(pk=pk).update(**changes)


@pytest.mark.django_db
def test_the_database_refuses_a_second_redemption_of_a_line_by_one_voucher(buyer, provider) -> None:
    voucher_factory(buyer=buyer)
    redeem(buyer, charge_line(provider, 100_000))
    again = Redemption.objects.get()
    again.pk, again._state.adding = uuid.uuid4(), True

    with pytest.raises(IntegrityError, match="redemption_once_per_line"), transaction.atomic():
        again.save()


def test_vouchers_imports_neither_billing_nor_marketplace() -> None:
    imported = set()
    for path in (REPO / "vouchers").rglob("*.py"):
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])

    assert imported.isdisjoint({"billing", "marketplace"})


def test_the_workloads_a_program_funds_are_the_marketplaces() -> None:
    assert Workload.choices == MarketplaceWorkload.choices
