"""``manage.py issue_vouchers``: a CSV of vouchers, all or none, with a report of refused rows."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.factories import BuyerFactory, ProviderFactory
from tests.vouchers.factories import program_factory
from vouchers.models import Voucher, VoucherProgram

pytestmark = pytest.mark.django_db


@pytest.fixture
def program() -> VoucherProgram:
    # The service-level calendar is in the past; this command issues now.
    from datetime import timedelta

    from django.utils import timezone

    return program_factory(valid_until=timezone.now() + timedelta(days=365))


def run(program: VoucherProgram, csv_file: Path, *extra: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("issue_vouchers", "--program", str(program.pk), "--csv", str(csv_file), *extra, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vouchers.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_of_good_rows_issues_every_voucher(tmp_path, program) -> None:  # type: ignore[no-untyped-def]
    first, second = BuyerFactory(), BuyerFactory()
    path = write(tmp_path, f"organization,face_value\n{first.slug},15000.00\n{second.pk},500\n")

    out, _ = run(program, path)

    assert "Issued 2 vouchers, 15500.00 CNY in all" in out
    assert {v.buyer_id: v.face_value for v in Voucher.objects.all()} == {first.pk: 1_500_000, second.pk: 50_000}
    assert Voucher.objects.get(buyer=first).code in out


def test_a_csv_with_bad_rows_issues_nothing_reports_each_by_line_and_fails(tmp_path, program) -> None:  # type: ignore[no-untyped-def]
    good, provider = BuyerFactory(), ProviderFactory()
    path = write(
        tmp_path,
        "organization,face_value,valid_until\n"
        f"{good.slug},100,\n"
        f"{provider.slug},100,\n"
        "nobody,100,\n"
        f"{BuyerFactory().slug},-1,\n"
        f"{BuyerFactory().slug},100,2999-01-01T00:00:00Z\n"
        f"{BuyerFactory().slug},100,,extra\n",
    )

    with pytest.raises(CommandError, match="5 of 6 rows refused; nothing was issued"):
        run(program, path)

    assert not Voucher.objects.exists()


def test_the_refused_rows_are_printed_with_their_line_numbers(tmp_path, program) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, f"organization,face_value\n{BuyerFactory().slug},100\nnobody,100\n")
    err = StringIO()

    with pytest.raises(CommandError):
        call_command("issue_vouchers", "--program", str(program.pk), "--csv", str(path), stderr=err)

    assert "line 3: organization: No organization has this id or slug." in err.getvalue()


def test_a_dry_run_checks_and_issues_nothing(tmp_path, program) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, f"organization,face_value\n{BuyerFactory().slug},100\n")

    out, _ = run(program, path, "--dry-run")

    assert "All 1 rows pass" in out
    assert not Voucher.objects.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("company,amount\nx,1\n", "The header must name face_value, organization"),
        ("organization,face_value\n", "Give at least one voucher"),
    ],
)
def test_a_malformed_csv_is_refused(tmp_path, program, text, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match=message):
        run(program, write(tmp_path, text))


def test_an_unknown_program_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="No voucher program"):
        call_command("issue_vouchers", "--program", "not-an-id", "--csv", str(write(tmp_path, "")))
