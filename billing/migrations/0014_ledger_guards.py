"""PostgreSQL closes three more ways around the ledger's rules (0004_ledger_rules).

- TRUNCATE of the legs or the entries is refused (core/0002_refuse_truncate).
- Legs are added to an entry only in the transaction that creates it: a balanced pair added
  later to a posted entry would change what it says. The entry records the transaction that
  inserted it (``created_xact``, set by a trigger whatever the INSERT says, never updated: the
  entries are immutable); a statement that inserts legs into any other entry is refused.
  ``pg_current_xact_id()`` is the top-level transaction, so savepoints (nested ``atomic``) do
  not matter. Entries posted before this migration have no ``created_xact`` and so are closed.
- A leg is in its account's currency: a foreign key on (account, currency) to the account's
  (id, currency), so a USD leg on a CNY account, or a later change of an account's currency,
  is refused.
"""

from django.db import migrations

from core.migration_operations import run_sql_script

RULES = """
CREATE TRIGGER billing_leg_no_truncate BEFORE TRUNCATE ON billing_leg
    FOR EACH STATEMENT EXECUTE FUNCTION compute_grid_refuse_truncate();
CREATE TRIGGER billing_entry_no_truncate BEFORE TRUNCATE ON billing_journalentry
    FOR EACH STATEMENT EXECUTE FUNCTION compute_grid_refuse_truncate();

ALTER TABLE billing_journalentry ADD COLUMN created_xact xid8;

CREATE OR REPLACE FUNCTION billing_entry_created_xact() RETURNS trigger AS $$
BEGIN
    NEW.created_xact := pg_current_xact_id();
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_entry_created_xact BEFORE INSERT ON billing_journalentry
    FOR EACH ROW EXECUTE FUNCTION billing_entry_created_xact();

CREATE OR REPLACE FUNCTION billing_legs_into_new_entries() RETURNS trigger AS $$
DECLARE
    closed uuid;
BEGIN
    SELECT entry.id INTO closed
    FROM inserted_legs leg JOIN billing_journalentry entry ON entry.id = leg.entry_id
    WHERE entry.created_xact IS DISTINCT FROM pg_current_xact_id() LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % is posted: legs are added only in the transaction that creates the entry',
            closed USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_legs_into_new_entries AFTER INSERT ON billing_leg
    REFERENCING NEW TABLE AS inserted_legs
    FOR EACH STATEMENT EXECUTE FUNCTION billing_legs_into_new_entries();

ALTER TABLE billing_account ADD CONSTRAINT billing_account_id_currency_key UNIQUE (id, currency);
ALTER TABLE billing_leg ADD CONSTRAINT billing_leg_in_account_currency
    FOREIGN KEY (account_id, currency) REFERENCES billing_account (id, currency);
"""

DROP = """
ALTER TABLE billing_leg DROP CONSTRAINT IF EXISTS billing_leg_in_account_currency;
ALTER TABLE billing_account DROP CONSTRAINT IF EXISTS billing_account_id_currency_key;
DROP TRIGGER IF EXISTS billing_legs_into_new_entries ON billing_leg;
DROP FUNCTION IF EXISTS billing_legs_into_new_entries();
DROP TRIGGER IF EXISTS billing_entry_created_xact ON billing_journalentry;
DROP FUNCTION IF EXISTS billing_entry_created_xact();
ALTER TABLE billing_journalentry DROP COLUMN IF EXISTS created_xact;
DROP TRIGGER IF EXISTS billing_entry_no_truncate ON billing_journalentry;
DROP TRIGGER IF EXISTS billing_leg_no_truncate ON billing_leg;
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0013_usage_event_key_per_provider"), ("core", "0002_refuse_truncate")]

    operations = [run_sql_script(RULES, DROP)]
