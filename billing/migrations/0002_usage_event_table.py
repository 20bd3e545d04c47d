from django.db import migrations
from django.utils import timezone


def create_table(apps, schema_editor):
    from billing.partitions import CREATE, usage_partitions_ensure

    schema_editor.execute(CREATE)
    usage_partitions_ensure(around=timezone.now().date())


def drop_table(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS billing_usageevent CASCADE")


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_table, drop_table)]
