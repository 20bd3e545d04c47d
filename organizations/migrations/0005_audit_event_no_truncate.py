"""The audit trail cannot be emptied by TRUNCATE either (see core/0002_refuse_truncate)."""

from django.db import migrations

from core.migration_operations import run_sql_script

RULES = """
CREATE TRIGGER organizations_auditevent_no_truncate BEFORE TRUNCATE ON organizations_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION compute_grid_refuse_truncate();
"""

DROP = "DROP TRIGGER IF EXISTS organizations_auditevent_no_truncate ON organizations_auditevent;"


class Migration(migrations.Migration):
    dependencies = [("organizations", "0004_audit_event_append_only"), ("core", "0002_refuse_truncate")]

    operations = [run_sql_script(RULES, DROP)]
