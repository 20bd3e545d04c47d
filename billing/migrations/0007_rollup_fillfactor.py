"""Room on each page of the rollups for the updates of quantity and billed quantity.

Neither column is indexed, so with free space on the page PostgreSQL updates a
row in place (a HOT update) without touching its indexes: the rollup task
updates a row each time events of its hour arrive.
"""

from django.db import migrations

from core.migration_operations import run_sql_script


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_usagerollup_price_plan")]

    operations = [
        run_sql_script(
            "ALTER TABLE billing_usagerollup SET (fillfactor = 70)", "ALTER TABLE billing_usagerollup RESET (fillfactor)"
        )
    ]
