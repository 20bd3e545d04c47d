from django.db import migrations
from django.utils import timezone


def create_table(apps, schema_editor):
    from billing.partitions import CREATE_POSTGRES, CREATE_SQLITE, usage_partitions_ensure

    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(CREATE_POSTGRES)
        usage_partitions_ensure(around=timezone.now().date())
    else:
        for statement in CREATE_SQLITE.split(";"):
            if statement.strip():
                schema_editor.execute(statement)


def drop_table(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS billing_usageevent CASCADE" if schema_editor.connection.vendor == "postgresql" else "DROP TABLE IF EXISTS billing_usageevent")


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_table, drop_table)]
