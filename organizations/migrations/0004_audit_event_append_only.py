from django.db import migrations

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


def _run(schema_editor, sql):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)  # no parameters: the % of RAISE are PL/pgSQL's own


def apply(apps, schema_editor):
    _run(schema_editor, RULES)


def revert(apps, schema_editor):
    _run(schema_editor, DROP)


class Migration(migrations.Migration):
    dependencies = [("organizations", "0003_audit_event")]

    operations = [migrations.RunPython(apply, revert)]
