from django.db import migrations, models


class Migration(migrations.Migration):
    """A lease's price lock becomes its own column (the booked end), so that its end can move later
    (an extension) while its lock stays."""

    dependencies = [
        ("marketplace", "0006_token_orders"),
    ]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="price_locked_until",
            field=models.DateTimeField(null=True),
        ),
        migrations.RunSQL(
            "UPDATE marketplace_lease SET price_locked_until = end_at", reverse_sql=migrations.RunSQL.noop
        ),
        migrations.AlterField(
            model_name="lease",
            name="price_locked_until",
            field=models.DateTimeField(
                help_text="The booked end: usage before this is billed with price_plan; an extension's hours are not locked."
            ),
        ),
        migrations.AlterField(
            model_name="lease",
            name="end_at",
            field=models.DateTimeField(
                help_text="When the lease ends: its booked end, or later if the buyer extended it."
            ),
        ),
        migrations.AddConstraint(
            model_name="lease",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("price_locked_until__gte", models.F("start_at")), ("price_locked_until__lte", models.F("end_at"))
                ),
                name="lease_lock_within_run",
            ),
        ),
    ]
