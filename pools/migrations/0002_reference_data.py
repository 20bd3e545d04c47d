from django.db import migrations


def load(apps, schema_editor):
    from pools.reference import load_reference_data

    load_reference_data(apps.get_model("pools", "Hub"), apps.get_model("pools", "GpuModel"))


class Migration(migrations.Migration):
    dependencies = [("pools", "0001_initial")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
