"""Leases keep the price version they were placed on (the one in force when they were placed) and
the order's ceiling."""

import django.db.models.deletion
from django.db import migrations, models

_BACKFILL = """
UPDATE marketplace_lease AS l SET
    max_price = o.max_price,
    price_plan_id = (
        SELECT p.id FROM pools_priceplan AS p WHERE p.pool_id = l.pool_id
        ORDER BY p.effective_from <= l.created_at DESC, CASE WHEN p.effective_from <= l.created_at
                 THEN p.effective_from END DESC, p.effective_from
        LIMIT 1
    )
FROM marketplace_order AS o WHERE o.id = l.order_id
"""


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0003_orbit_order"), ("pools", "0005_price_rise_notice")]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="max_price",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text="The buyer's ceiling per card-hour: a rise above it ends the lease (price_above_max).",
                max_digits=12,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="lease",
            name="price_plan",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="pools.priceplan"
            ),
        ),
        migrations.RunSQL(_BACKFILL, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="lease",
            name="price_plan",
            field=models.ForeignKey(
                help_text="The price version the lease was placed on: its booked hours are billed with it.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="pools.priceplan",
            ),
        ),
    ]
