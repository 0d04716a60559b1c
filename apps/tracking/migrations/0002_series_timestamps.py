"""Cut histories keep the time of each point and where the non-finite points were. Rows
computed before lack both; the cache is derived data, so they are dropped and recomputed
on the next read."""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def drop_old_rows(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("tracking", "MetricSeries").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="metricseries",
            name="nonfinite",
            field=models.TextField(default="[]", help_text='JSON array of [step, timestamp, "NaN"|"inf"|"-inf"]'),
        ),
        migrations.AddField(
            model_name="metricseries",
            name="timestamps",
            field=models.TextField(default="[]", help_text="JSON array: wall-clock ms of each kept point"),
        ),
        migrations.RunPython(drop_old_rows, migrations.RunPython.noop),
    ]
