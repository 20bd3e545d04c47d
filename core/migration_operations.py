"""Migration operations for rules only PostgreSQL keeps (triggers, storage parameters).

The embedded default runs on SQLite, where the service works without them.
"""

from collections.abc import Callable
from typing import Any

from django.db import migrations


def _on_postgresql(sql: str) -> Callable[[Any, Any], None]:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(sql)  # no parameters: a % of PL/pgSQL's RAISE stays as it is

    return run


def run_sql_on_postgresql(sql: str, reverse_sql: str) -> migrations.RunPython:
    """``RunSQL`` that does nothing on other databases."""
    return migrations.RunPython(_on_postgresql(sql), _on_postgresql(reverse_sql))
