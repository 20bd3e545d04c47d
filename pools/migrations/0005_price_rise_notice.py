"""Price versions say from when running leases pay them (a rise only after its notice); the versions
already made took effect for everyone at once."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pools", "0004_hub_region_orbit")]

    operations = [
        migrations.AddField(model_name="priceplan", name="running_from", field=models.DateTimeField(null=True)),
        migrations.AddField(
            model_name="priceplan",
            name="rise",
            field=models.BooleanField(
                default=False, help_text="Higher, in some hour or token price, than the version running leases paid."
            ),
        ),
        migrations.RunSQL("UPDATE pools_priceplan SET running_from = effective_from", migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="priceplan",
            name="effective_from",
            field=models.DateTimeField(help_text="From when new orders are priced with this version."),
        ),
        migrations.AlterField(
            model_name="priceplan",
            name="running_from",
            field=models.DateTimeField(
                help_text="From when running leases pay it outside their price lock: effective_from, or for a rise "
                "not before PRICE_RISE_NOTICE_HOURS after it was made."
            ),
        ),
    ]
