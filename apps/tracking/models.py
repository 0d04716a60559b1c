"""The metric cache: downsampled histories of finished MLflow runs.

Derived data, never the source of truth: a row is only served after the same request has
checked, against MLflow's current answer for the run, that the run is still finished with
the same end time and the same latest point of the metric (see apps.tracking.series)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class MetricSeries(models.Model):
    """The history of metric `key` of finished run `run_id`, downsampled to at most
    `max_points` points, stored as the JSON arrays the API and the charts send as they are
    (`steps`, `values`), with the exact minimum, maximum and last value of the whole series.

    The fingerprint (`run_end_time`, `latest_step`, `latest_timestamp`, `latest_value`) is
    what MLflow said about the run when the row was computed; a resumed run gets a new end
    time, a late write a new latest point, and either makes the row stale. `logged` and
    `last_timestamp` (every point of the metric, NaN included, and the newest timestamp)
    are checked against MLflow's store where the portal may read it (apps.tracking.store):
    a point written late at an *earlier* step changes the count, not the latest point."""

    run_id = models.CharField(max_length=64)
    key = models.CharField(max_length=250)
    max_points = models.PositiveIntegerField()
    experiment_id = models.CharField(max_length=64)
    run_end_time = models.BigIntegerField()
    latest_step = models.BigIntegerField()
    latest_timestamp = models.BigIntegerField()
    latest_value = models.FloatField(null=True)
    points = models.PositiveIntegerField(help_text="finite points logged")
    logged = models.BigIntegerField(null=True, help_text="points logged, NaN included")
    last_timestamp = models.BigIntegerField(null=True, help_text="newest point's timestamp (ms)")
    steps = models.TextField(help_text="JSON array of the kept steps")
    values = models.TextField(help_text="JSON array of the kept values")
    minimum = models.FloatField(null=True)
    maximum = models.FloatField(null=True)
    last = models.FloatField(null=True)
    timestamps = models.TextField(default="[]", help_text="JSON array: wall-clock ms of each kept point")
    nonfinite = models.TextField(default="[]", help_text='JSON array of [step, timestamp, "NaN"|"inf"|"-inf"]')
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run_id", "key", "max_points"], name="metric_series_unique"),
        ]
        indexes = [models.Index(fields=["experiment_id"])]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.key} (≤{self.max_points})"
