"""Answers stored for an Idempotency-Key no longer keep a top-up's client secret: take it out of
those stored before (a replay asks Stripe for it again)."""

from typing import Any

from django.db import migrations


def forget_client_secrets(apps: Any, schema_editor: Any) -> None:
    record_model = apps.get_model("core", "IdempotencyRecord")
    for record in record_model.objects.filter(response_body__has_key="client_secret").iterator():
        del record.response_body["client_secret"]
        record.save(update_fields=["response_body"])


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0016_unprocessable_webhook"),
        ("core", "0002_refuse_truncate"),
    ]

    operations = [migrations.RunPython(forget_client_secrets, migrations.RunPython.noop)]
