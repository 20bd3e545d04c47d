#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import re
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    from django.core.management import execute_from_command_line
    from django.db import OperationalError, connection

    try:
        execute_from_command_line(sys.argv)
    except OperationalError as exc:
        missing = re.search(r'database "([^"]+)" does not exist', str(exc))
        if not missing:
            raise
        # A newcomer's first run on a server of their own: one line that says what to do.
        host = connection.settings_dict.get("HOST") or "localhost"
        sys.exit(
            f"The database {missing[1]!r} does not exist on the PostgreSQL server at {host}: create it first "
            f"(createdb -h {host} {missing[1]}), or unset DATABASE_URL to use the embedded default."
        )


if __name__ == "__main__":
    main()
