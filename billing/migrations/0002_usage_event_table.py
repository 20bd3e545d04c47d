"""The raw usage events table as first made: partitioned by month, its keys in ``UsageEventKey``.
0018 replaces it (one write per event); the SQL is kept here as it ran, not imported."""

from django.db import migrations

CREATE = """
CREATE TABLE IF NOT EXISTS billing_usageevent (
    id bigint GENERATED ALWAYS AS IDENTITY,
    source varchar(500) NOT NULL,
    event_id varchar(200) NOT NULL,
    type varchar(64) NOT NULL,
    lease_id uuid NOT NULL,
    provider_id uuid NOT NULL,
    time timestamptz NOT NULL,
    quantity numeric(20, 6),
    cards integer,
    model varchar(100) NOT NULL DEFAULT '',
    input_tokens bigint,
    output_tokens bigint,
    data jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS billing_usageevent_lease_time ON billing_usageevent (lease_id, time);
CREATE TABLE IF NOT EXISTS billing_usageevent_default PARTITION OF billing_usageevent DEFAULT;
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, "DROP TABLE IF EXISTS billing_usageevent CASCADE")]
