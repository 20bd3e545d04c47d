"""A migration operation for SQL scripts the ORM cannot express (triggers, storage parameters)."""

from collections.abc import Callable
from typing import Any

from django.db import migrations


def _script(sql: str) -> Callable[[Any, Any], None]:
    def run(apps: Any, schema_editor: Any) -> None:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)  # no parameters: a % of PL/pgSQL's RAISE stays as it is

    return run


def run_sql_script(sql: str, reverse_sql: str) -> migrations.RunPython:
    """``RunSQL`` that sends the script whole: not split into statements, nothing interpolated."""
    return migrations.RunPython(_script(sql), _script(reverse_sql))
