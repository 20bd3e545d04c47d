"""PostgreSQL guards the ledger: entries balance, posted rows never change."""

from django.db import migrations

from core.migration_operations import run_sql_script

RULES = """
CREATE OR REPLACE FUNCTION billing_entry_balanced() RETURNS trigger AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT currency, sum(amount) AS total INTO unbalanced
    FROM billing_leg WHERE entry_id = NEW.entry_id
    GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: its % legs sum to %',
            NEW.entry_id, unbalanced.currency, unbalanced.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER billing_leg_balanced
    AFTER INSERT ON billing_leg DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_entry_balanced();

CREATE OR REPLACE FUNCTION billing_entry_has_legs() RETURNS trigger AS $$
BEGIN
    IF (SELECT count(*) FROM billing_leg WHERE entry_id = NEW.id) < 2 THEN
        RAISE EXCEPTION 'journal entry % needs at least two legs', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER billing_entry_has_legs
    AFTER INSERT ON billing_journalentry DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_entry_has_legs();

CREATE OR REPLACE FUNCTION billing_ledger_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'posted ledger rows are immutable (% on %): post a reversing entry instead',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'check_violation';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_leg_immutable BEFORE UPDATE OR DELETE ON billing_leg
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_immutable();
CREATE TRIGGER billing_entry_immutable BEFORE UPDATE OR DELETE ON billing_journalentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_immutable();
"""

DROP = """
DROP TRIGGER IF EXISTS billing_entry_immutable ON billing_journalentry;
DROP TRIGGER IF EXISTS billing_leg_immutable ON billing_leg;
DROP TRIGGER IF EXISTS billing_entry_has_legs ON billing_journalentry;
DROP TRIGGER IF EXISTS billing_leg_balanced ON billing_leg;
DROP FUNCTION IF EXISTS billing_ledger_immutable();
DROP FUNCTION IF EXISTS billing_entry_has_legs();
DROP FUNCTION IF EXISTS billing_entry_balanced();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_ledger")]

    operations = [run_sql_script(RULES, DROP)]
