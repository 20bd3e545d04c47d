"""Usage-event keys are per provider: the key of an event is (provider, source, id).

The keys stored so far take the provider of the event they guard (each key guards one event).
"""

import django.db.models.deletion
from django.db import migrations, models

BACKFILL = """
UPDATE billing_usageeventkey k SET provider_id = e.provider_id
FROM billing_usageevent e
WHERE e.source = k.source AND e.event_id = k.event_id AND k.provider_id IS NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0012_refunds"),
        ("organizations", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="usageeventkey",
            name="provider",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="organizations.organization",
            ),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        # A key whose event is gone guards nothing (events are only deleted with their key).
        migrations.RunSQL("DELETE FROM billing_usageeventkey WHERE provider_id IS NULL", migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="usageeventkey",
            name="provider",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="organizations.organization",
            ),
        ),
        migrations.RemoveConstraint(model_name="usageeventkey", name="usage_event_key_unique"),
        migrations.AddConstraint(
            model_name="usageeventkey",
            constraint=models.UniqueConstraint(
                fields=("provider", "source", "event_id"), name="usage_event_key_unique"
            ),
        ),
    ]
