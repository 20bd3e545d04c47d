"""Programs, vouchers and charge lines for the voucher tests, made through the services.

Service-level tests run on a fixed calendar in Asia/Shanghai time: programs of
2026, vouchers granted on 1 March, a March invoice finalized on 1 April.
"""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.timezones import local_zone
from organizations.models import Organization
from tests.factories import BuyerFactory, IssuerFactory, ProviderFactory
from vouchers import services
from vouchers.charges import ChargeLine
from vouchers.issuing import VoucherRequest
from vouchers.models import Voucher, VoucherProgram


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=local_zone())  # type: ignore[misc]


YEAR_START, YEAR_END = local(2026, 1, 1), local(2027, 1, 1)
GRANTED_AT = local(2026, 3, 1)
MARCH = (local(2026, 3, 1), local(2026, 4, 1))
APRIL = (local(2026, 4, 1), local(2026, 5, 1))
FINALIZED_AT = local(2026, 4, 2, 9)


def program_factory(
    issuer: Organization | None = None,
    *,
    budget: int = 100_000_000,
    coverage_share: str = "0.2",
    per_company_yearly_cap: int = 50_000_000,
    valid_from: datetime = YEAR_START,
    valid_until: datetime = YEAR_END,
    status: str = VoucherProgram.Status.OPEN,
    **terms: Any,
) -> VoucherProgram:
    program = services.program_create(
        issuer=issuer or IssuerFactory(),
        name=terms.pop("name", "Compute voucher 2026"),
        budget=budget,
        coverage_share=Decimal(coverage_share),
        per_company_yearly_cap=per_company_yearly_cap,
        valid_from=valid_from,
        valid_until=valid_until,
        by="test",
        now=YEAR_START,
        **terms,
    )
    if status != VoucherProgram.Status.DRAFT:
        program = services.program_open(program=program, by="test", now=YEAR_START)
    if status == VoucherProgram.Status.CLOSED:
        program = services.program_close(program=program, by="test", now=YEAR_START)
    return program


def voucher_factory(
    program: VoucherProgram | None = None,
    buyer: Organization | None = None,
    *,
    face_value: int = 1_500_000,
    valid_until: datetime | None = None,
    now: datetime = GRANTED_AT,
) -> Voucher:
    (voucher,) = services.vouchers_issue(
        program=program or program_factory(),
        requests=[VoucherRequest(organization=buyer or BuyerFactory(), face_value=face_value, valid_until=valid_until)],
        by="test",
        now=now,
    )
    voucher.refresh_from_db()
    return voucher


def charge_line(
    provider: Organization | None = None,
    amount: int = 100_000,
    *,
    ref: str = "line-1",
    period: tuple[datetime, datetime] = MARCH,
    hub: str = "ningxia",
    gpu_model: str = "H100-80G",
    workload: str = "training",
) -> ChargeLine:
    return ChargeLine(
        line_ref=ref,
        amount=amount,
        lease_id=str(uuid.uuid4()),
        pool_id=str(uuid.uuid4()),
        provider_id=str((provider or ProviderFactory()).pk),
        hub=hub,
        gpu_model=gpu_model,
        workload=workload,
        period_start=period[0],
        period_end=period[1],
    )


def redeem(buyer: Organization, *lines: ChargeLine, invoice: str = "invoice-1", at: datetime = FINALIZED_AT) -> Any:
    return services.vouchers_redeem(buyer=buyer, invoice_ref=invoice, lines=list(lines), at=at)


def fresh(voucher: Voucher) -> Voucher:
    voucher.refresh_from_db()
    return voucher
