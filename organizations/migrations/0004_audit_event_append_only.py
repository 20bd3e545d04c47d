from django.db import migrations

from core.migration_operations import run_sql_script

RULES = """
CREATE OR REPLACE FUNCTION organizations_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'check_violation';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER organizations_auditevent_append_only BEFORE UPDATE OR DELETE ON organizations_auditevent
    FOR EACH ROW EXECUTE FUNCTION organizations_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS organizations_auditevent_append_only ON organizations_auditevent;
DROP FUNCTION IF EXISTS organizations_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("organizations", "0003_audit_event")]

    operations = [run_sql_script(RULES, DROP)]
