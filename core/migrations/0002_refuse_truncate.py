"""One trigger function for the tables that are a permanent record: TRUNCATE is refused.

A statement-level BEFORE TRUNCATE trigger calls it (the ledger's, the audit trail's migrations);
row triggers never see a TRUNCATE, so without it one statement empties what no UPDATE or DELETE
may touch. The test harness empties the database between transactional tests with TRUNCATE
(Django's flush); it alone may, by setting ``compute_grid.allow_truncate`` to the id of its
own transaction (tests/conftest.py). The value is good for that one transaction only, so no
session setting, role or database default (``ALTER ROLE ... SET``, ``PGOPTIONS``,
postgresql.conf) can leave the door open: production has nothing to set.
"""

from django.db import migrations

from core.migration_operations import run_sql_script

RULES = """
CREATE OR REPLACE FUNCTION compute_grid_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('compute_grid.allow_truncate', true) = pg_current_xact_id()::text THEN
        RETURN NULL;  -- the test harness's flush, in the transaction that allowed it
    END IF;
    RAISE EXCEPTION 'TRUNCATE of % refused: its rows are a permanent record', TG_TABLE_NAME
        USING ERRCODE = 'check_violation';
END
$$ LANGUAGE plpgsql;
"""

DROP = "DROP FUNCTION IF EXISTS compute_grid_refuse_truncate();"


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [run_sql_script(RULES, DROP)]
