"""Model instances from plain SQL, for the few statements every order runs (its pools' locks, their
price versions, their deposits): there, compiling the ORM's query, or a RawQuerySet's matching of its
columns to the model's fields, cost more than running the statement."""

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, models

M = TypeVar("M", bound=models.Model)


class Rows(Generic[M]):
    """A model's columns (``fields`` alone, else all of them) for a statement's select list, and the
    instances of the rows it returns. The columns come in the model's field order, the order
    ``Model.from_db`` takes them; fields not selected load on first use (a query each), as with
    ``only()``."""

    def __init__(self, model: type[M], fields: Iterable[str] | None = None, *, alias: str = "") -> None:
        wanted = None if fields is None else set(fields)
        chosen = [
            field
            for field in model._meta.concrete_fields
            if wanted is None or field.name in wanted or field.attname in wanted
        ]
        missing = (wanted or set()) - {name for field in chosen for name in (field.name, field.attname)}
        if missing:
            raise ValueError(f"{model.__name__} has no field {', '.join(sorted(missing))}")
        prefix = f"{alias}." if alias else ""
        self.model = model
        self.attnames = [field.attname for field in chosen]
        self.columns = ", ".join(prefix + connection.ops.quote_name(str(field.column)) for field in chosen)
        self._converters = [
            (position, field, converters)
            for position, field in enumerate(chosen)
            if (converters := field.get_db_converters(connection))
        ]

    def fetch(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[M]:
        """The instances of the rows ``sql`` returns; it selects ``self.columns``."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [self.instance(row) for row in cursor.fetchall()]

    def instance(self, values: Sequence[Any]) -> M:
        """The instance of one row's values of ``self.columns`` (a slice of a joined row's)."""
        if self._converters:
            values = list(values)
            for position, field, converters in self._converters:
                for converter in converters:
                    values[position] = converter(values[position], field, connection)
        return self.model.from_db(DEFAULT_DB_ALIAS, self.attnames, values)
