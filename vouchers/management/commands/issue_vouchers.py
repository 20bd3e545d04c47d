import csv
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from core.context import runs_as_command
from core.exceptions import ApplicationError
from core.money import format_yuan
from vouchers.issuing import VouchersRefused
from vouchers.models import VoucherProgram
from vouchers.serializers import parse_voucher_rows
from vouchers.services import vouchers_issue

COLUMNS = {"organization", "face_value", "valid_until"}
REQUIRED = {"organization", "face_value"}
FIRST_DATA_LINE = 2  # line 1 is the header


class Command(BaseCommand):
    help = (
        "Issue a program's vouchers from a CSV file with the columns organization (id or slug), face_value "
        "(yuan) and, optionally, valid_until (ISO 8601). All or none: any refused row issues nothing, every "
        "refused row is reported by its line, and the command exits non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--program", required=True, help="The program's id.")
        parser.add_argument("--csv", required=True, type=Path, help="The CSV file (UTF-8, with a header line).")
        parser.add_argument("--dry-run", action="store_true", help="Check every row; issue nothing.")
        parser.add_argument("--by", default="command:issue_vouchers", help="Who issues, for the record.")

    @runs_as_command
    def handle(self, *args: Any, **options: Any) -> None:
        program = self._program(options["program"])
        rows = self._rows(options["csv"])
        now = timezone.now()
        try:
            requests = parse_voucher_rows(program=program, rows=rows, now=now)
            total = sum(request.face_value for request in requests)
            if options["dry_run"]:
                self.stdout.write(
                    f"All {len(requests)} rows pass; they would issue {format_yuan(total)} {program.currency}."
                )
                return
            vouchers = vouchers_issue(program=program, requests=requests, by=options["by"], now=now)
        except VouchersRefused as exc:
            self._report(exc)
            raise CommandError(f"{len(exc.problems)} of {len(rows)} rows refused; nothing was issued.") from None
        except (ApplicationError, ValidationError) as exc:
            message = exc.message if isinstance(exc, ApplicationError) else "; ".join(map(str, exc.detail))  # type: ignore[arg-type]
            raise CommandError(f"{message} Nothing was issued.") from None
        self.stdout.write(f"Issued {len(vouchers)} vouchers, {format_yuan(total)} {program.currency} in all:")
        writer = csv.writer(self.stdout)
        writer.writerow(["organization", "code", "face_value", "valid_until"])
        for voucher, request in zip(vouchers, requests, strict=True):
            writer.writerow(
                [
                    request.organization.slug,
                    voucher.code,
                    format_yuan(voucher.face_value),
                    voucher.valid_until.isoformat(),
                ]
            )

    def _program(self, program_id: str) -> VoucherProgram:
        try:
            program = VoucherProgram.objects.select_related("issuer").filter(pk=uuid.UUID(program_id)).first()
        except ValueError:
            program = None
        if program is None:
            raise CommandError(f"No voucher program with id {program_id!r}.")
        return program

    def _rows(self, path: Path) -> list[dict[str, Any]]:
        try:
            with path.open(newline="", encoding="utf-8-sig") as file:
                reader = csv.DictReader(file)
                header = set(reader.fieldnames or [])
                if not header >= REQUIRED or not header <= COLUMNS:
                    raise CommandError(
                        f"The header must name {', '.join(sorted(REQUIRED))} and optionally valid_until; "
                        f"it has {', '.join(reader.fieldnames or []) or 'nothing'}."
                    )
                return [self._row(raw) for raw in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None

    @staticmethod
    def _row(raw: dict[str | None, Any]) -> dict[str, Any]:
        row = {key: value for key, value in raw.items() if key is not None and value not in ("", None)}
        if None in raw:
            row["extra_cells"] = raw[None]  # refused as an unknown field, with the rest of the row's problems
        return row

    def _report(self, exc: VouchersRefused) -> None:
        self.stderr.write("Refused rows:")
        for index in sorted(exc.problems):
            for field, problems in exc.problems[index].items():
                for problem in problems:
                    self.stderr.write(f"  line {index + FIRST_DATA_LINE}: {field}: {problem['message']}")
