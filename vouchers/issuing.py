"""The rules a voucher request must pass, row by row, so that a bulk issue can report every bad row.

Used by the API and ``manage.py issue_vouchers`` before issuing (without locks,
to report everything at once) and by ``vouchers_issue`` again under the
program's lock. Problems are keyed by the row's index, each a list of
``{"code", "message"}`` per field, as in the error body's ``fields``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.translation import gettext

from core.exceptions import ApplicationError, ConflictError
from organizations.models import Organization
from organizations.selectors import related_organizations
from vouchers.models import VoucherProgram

MAX_VOUCHERS_PER_REQUEST = 10_000

FieldProblems = dict[str, list[dict[str, str]]]


@dataclass(frozen=True)
class VoucherRequest:
    organization: Organization
    face_value: int  # fen
    valid_until: datetime | None = None  # default: the program's end


class VouchersRefused(ApplicationError):
    """Some rows of an issue request are bad: nothing was issued."""

    code = "vouchers_refused"

    def __init__(self, problems: dict[int, FieldProblems], *, rows: int, status_code: int = 400) -> None:
        indexes = sorted(problems)
        shown = ", ".join(str(index) for index in indexes[:20]) + (", ..." if len(indexes) > 20 else "")
        super().__init__(
            f"Nothing was issued: {len(indexes)} of {rows} vouchers are refused (rows {shown}); "
            "'fields' lists each refused row by its index.",
            fields={str(index): problems[index] for index in indexes},
            status_code=status_code,
        )
        self.problems = problems


def problem(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def check_program_issuable(program: VoucherProgram, now: datetime) -> None:
    if program.status != VoucherProgram.Status.OPEN:
        raise ConflictError(
            gettext("This program is %(status)s; vouchers are issued only while it is open.")
            % {"status": program.status},
            code="program_not_open",
        )
    if program.valid_until <= now:
        raise ConflictError(
            gettext("This program's validity has ended; it issues no more vouchers."), code="program_ended"
        )


def buyer_refusal(
    program: VoucherProgram, organization: Organization, issuers_group: frozenset[Any] | None = None
) -> dict[str, str] | None:
    """Why ``organization`` may not hold a voucher of ``program``, or None. ``issuers_group``: the
    ids related to the program's issuer (``related_organizations``), read here if not given."""
    if organization.kind != Organization.Kind.BUYER:
        return problem("not_a_buyer", f"{organization.slug} is a {organization.kind}; only buyers hold vouchers.")
    if not organization.is_active:
        return problem("inactive_organization", f"{organization.slug} is deactivated.")
    if issuers_group is None:
        issuers_group = related_organizations(organization=program.issuer)
    if organization.pk in issuers_group:
        return problem(
            "related_party",
            f"{organization.slug} is in the issuer's group (or is the issuer); "
            "an issuer cannot grant vouchers to itself or its own group.",
        )
    if program.provinces and organization.province not in program.provinces:
        return problem(
            "not_eligible",
            f"{organization.slug} is in {organization.province or 'no province'}; the program is for companies in "
            f"{', '.join(program.provinces)}.",
        )
    if program.cities and organization.city not in program.cities:
        return problem(
            "not_eligible",
            f"{organization.slug} is in {organization.city or 'no city'}; the program is for companies in "
            f"{', '.join(program.cities)}.",
        )
    if program.sme_only and not organization.is_sme:
        return problem("not_eligible", f"{organization.slug} is not a small or medium enterprise; the program is.")
    return None


def row_problems(
    *, program: VoucherProgram, requests: Sequence[tuple[int, VoucherRequest]], now: datetime
) -> dict[int, FieldProblems]:
    """The rule problems of each (index, request): eligibility, validity, repeats."""
    problems: dict[int, FieldProblems] = {}
    first_row: dict[Any, int] = {}
    starts = max(now, program.valid_from)
    issuers_group = related_organizations(organization=program.issuer)
    for index, request in requests:
        found: FieldProblems = {}
        refusal = buyer_refusal(program, request.organization, issuers_group)
        if refusal is not None:
            found["organization"] = [refusal]
        elif request.organization.pk in first_row:
            found["organization"] = [
                problem(
                    "duplicate_organization",
                    f"Row {first_row[request.organization.pk]} already gives {request.organization.slug} a voucher.",
                )
            ]
        else:
            first_row[request.organization.pk] = index
        if request.face_value <= 0:
            found["face_value"] = [problem("not_positive", "A voucher's face value must be more than zero.")]
        if request.valid_until is not None:
            if request.valid_until <= starts:
                found["valid_until"] = [
                    problem("ends_before_start", f"The voucher would end before it starts ({starts.isoformat()}).")
                ]
            elif request.valid_until > program.valid_until:
                found["valid_until"] = [
                    problem(
                        "after_program_end",
                        f"A voucher cannot outlive its program, which ends {program.valid_until.isoformat()}.",
                    )
                ]
        if found:
            problems[index] = found
    return problems
