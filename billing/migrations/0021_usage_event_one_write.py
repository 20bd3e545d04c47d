"""One write per usage event: the events table keeps each event's unique key itself.

The events were partitioned by month, where PostgreSQL cannot keep a unique index
that omits the partition key, so every event also wrote a row of
``UsageEventKey``. Now the table is partitioned by hash of ``key``, a 16-byte digest
of (provider, ``source``, ``id``), and each partition keeps the primary key on it:
exactly-once forever, per provider, by one index of the one row. ``digest`` (16
bytes of the content's SHA-256) tells a replay from a conflict, as the key
table's did.

The existing events move with their key and the digest their key row held; then
the month table and the key table are dropped. Reversible: the events go back to
a month table and each gets its key row again (digests padded: a replay of an
event moved there and back answers ``conflict``, never stores it twice).
"""

from django.db import migrations

PARTITIONS = 8

KEY_FUNCTION = """
CREATE FUNCTION billing_usage_event_key(provider uuid, source text, event_id text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(substring(sha256(convert_to(
        provider::text || ':' || length(source)::text || ':' || source || event_id, 'UTF8')) FROM 1 FOR 16), 'hex')::uuid
$$;
COMMENT ON FUNCTION billing_usage_event_key(uuid, text, text) IS
    'The unique key of a usage event: 16 bytes of SHA-256 over its provider, source (length-prefixed) and id.';
"""

COLUMNS = (
    "source, event_id, type, lease_id, provider_id, time, quantity, cards, model, input_tokens, output_tokens, data,"
    " received_at"
)

HASH_PARTITIONS = "".join(
    f"CREATE TABLE billing_usageevent_h{n} PARTITION OF billing_usageevent"
    f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {n});\n"
    for n in range(PARTITIONS)
)
E_COLUMNS = ", ".join(f"e.{column.strip()}" for column in COLUMNS.split(","))

FORWARD = f"""
ALTER TABLE billing_usageevent RENAME TO billing_usageevent_by_month;
ALTER INDEX billing_usageevent_lease_time RENAME TO billing_usageevent_by_month_lease_time;
CREATE TABLE billing_usageevent (
    key uuid NOT NULL,
    digest uuid NOT NULL,
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
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_usageevent_key PRIMARY KEY (key)
) PARTITION BY HASH (key);
{HASH_PARTITIONS}
CREATE INDEX billing_usageevent_lease_time ON billing_usageevent (lease_id, time);
INSERT INTO billing_usageevent (key, digest, {COLUMNS})
SELECT billing_usage_event_key(e.provider_id, e.source, e.event_id),
       coalesce(substring(k.digest FROM 1 FOR 32)::uuid, '00000000-0000-0000-0000-000000000000'),
       {E_COLUMNS}
FROM billing_usageevent_by_month e
LEFT JOIN billing_usageeventkey k
    ON k.provider_id = e.provider_id AND k.source = e.source AND k.event_id = e.event_id;
DROP TABLE billing_usageevent_by_month;
"""

BACKWARD = f"""
ALTER TABLE billing_usageevent RENAME TO billing_usageevent_by_key;
ALTER INDEX billing_usageevent_lease_time RENAME TO billing_usageevent_by_key_lease_time;
CREATE TABLE billing_usageevent (
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
CREATE INDEX billing_usageevent_lease_time ON billing_usageevent (lease_id, time);
CREATE TABLE billing_usageevent_default PARTITION OF billing_usageevent DEFAULT;
INSERT INTO billing_usageevent ({COLUMNS}) SELECT {COLUMNS} FROM billing_usageevent_by_key;
INSERT INTO billing_usageeventkey (provider_id, source, event_id, digest, time, batch)
SELECT provider_id, source, event_id, replace(digest::text, '-', '') || repeat('0', 32), time,
       '00000000-0000-0000-0000-000000000000'
FROM billing_usageevent_by_key;
DROP TABLE billing_usageevent_by_key;
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0020_reserved_capacity")]

    operations = [
        migrations.RunSQL(KEY_FUNCTION, "DROP FUNCTION billing_usage_event_key(uuid, text, text)"),
        migrations.RunSQL(FORWARD, BACKWARD),
        # The key table goes once its digests have moved (and comes back first when reversed).
        migrations.DeleteModel(name="UsageEventKey"),
    ]
