"""Room on each page of the rollups for the updates of quantity and billed quantity.

Neither column is indexed, so with free space on the page PostgreSQL updates a
row in place (a HOT update) without touching its indexes: the rollup task and
month-end finalization update every row at least once.
"""

from django.db import migrations


def apply(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE billing_usagerollup SET (fillfactor = 70)")


def revert(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE billing_usagerollup RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_usagerollup_price_plan")]

    operations = [migrations.RunPython(apply, revert)]
