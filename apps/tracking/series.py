"""Metric histories for charts: downsampled, and cached for finished runs.

The rule that keeps the cache honest: a stored series is served only when the runs/search
answer of the *same request* says the run is finished, with the end time and the latest
point of the metric the row was computed from. Runs still running are read live every
time and their rows (left by a run that was resumed) are deleted; a deleted run never
reaches this module (the lookups drop it) and its rows are deleted by `forget_runs`. So
the cache can only be missing, never stale: what it serves equals a fresh computation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from apps.tracking.downsample import downsample
from apps.tracking.fetch import Want, read_histories
from apps.tracking.models import MetricSeries
from apps.tracking.runs import Run

DEFAULT_MAX_POINTS = 1000
MAX_MAX_POINTS = 10_000

_FIELDS = (
    "pk",
    "run_id",
    "key",
    "run_end_time",
    "latest_step",
    "latest_timestamp",
    "latest_value",
    "points",
    "steps",
    "values",
    "minimum",
    "maximum",
    "last",
)


def _dumps(values: list[int] | list[float]) -> str:
    return json.dumps(values, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True)
class Series:
    """One downsampled history. `steps_json`/`values_json` are JSON arrays, kept as text so
    that a cached series goes from the database to the response without being parsed."""

    run_id: str
    key: str
    steps_json: str
    values_json: str
    points: int
    minimum: float | None
    maximum: float | None
    last: float | None
    cached: bool

    def as_json(self) -> str:
        return '{"steps":' + self.steps_json + ',"values":' + self.values_json + "}"

    @property
    def steps(self) -> list[int]:
        steps: list[int] = json.loads(self.steps_json)
        return steps

    @property
    def values(self) -> list[float]:
        values: list[float] = json.loads(self.values_json)
        return values


@dataclass
class SeriesSet:
    """Series by (run_id, key), the ones MLflow could not give ((run_id, key) -> message),
    and how each was obtained (for logs and the benchmark)."""

    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    cached: int = 0
    computed: int = 0

    def for_key(self, key: str) -> dict[str, Series]:
        return {run_id: s for (run_id, k), s in self.series.items() if k == key}


def _fresh(run: Run, key: str, row: tuple[Any, ...]) -> bool:
    latest = run.latest.get(key)
    return (
        run.is_finished
        and latest is not None
        and row[3] == run.end_time
        and (row[4], row[5], row[6]) == (latest.step, latest.timestamp, latest.value)
    )


def compute(run_id: str, key: str, steps: list[int], values: list[float], max_points: int) -> Series:
    """The series a fresh computation gives (also what gets cached)."""
    down = downsample(steps, values, max_points)
    return Series(
        run_id, key, _dumps(down.steps), _dumps(down.values), down.points, down.minimum, down.maximum, down.last, False
    )


def histories(runs: list[Run], keys: list[str] | None, max_points: int = DEFAULT_MAX_POINTS) -> SeriesSet:
    """Series of `keys` (None: every metric each run has) of `runs`, at most `max_points`
    points each. Finished runs come from the cache when it is fresh and are cached when
    not; running runs are read from MLflow. One query reads the cache, one transaction
    writes it; MLflow is read with a few parallel calls (apps.tracking.fetch)."""
    result = SeriesSet()
    by_id = {run.run_id: run for run in runs}
    wanted = {
        (run.run_id, key): run
        for run in runs
        for key in (keys if keys is not None else list(run.latest))
        if key in run.latest
    }
    if not wanted:
        return result
    rows = MetricSeries.objects.filter(run_id__in=list(by_id), max_points=max_points)
    if keys is not None:
        rows = rows.filter(key__in=keys)
    stale: list[int] = []
    for row in rows.values_list(*_FIELDS):
        run_id, key = str(row[1]), str(row[2])
        run = by_id[run_id]
        if (run_id, key) in wanted and _fresh(run, key, row):
            result.series[(run_id, key)] = Series(
                run_id, key, str(row[8]), str(row[9]), int(row[7]), row[10], row[11], row[12], True
            )
        else:  # the run was resumed, logged more, or this row is from before: never serve it
            stale.append(int(row[0]))
    result.cached = len(result.series)

    missing = [
        Want(run_id, key, min(run.latest[key].step + 1, 1_000_000))
        for (run_id, key), run in wanted.items()
        if (run_id, key) not in result.series
    ]
    new_rows: list[MetricSeries] = []
    if missing:
        read, result.errors = read_histories(
            missing, lambda run_id, key, found: compute(run_id, key, found.steps, found.values, max_points)
        )
        for (run_id, key), series in read.items():
            result.series[(run_id, key)] = series
            run = by_id[run_id]
            latest = run.latest[key]
            if run.is_finished and run.end_time is not None:
                new_rows.append(
                    MetricSeries(
                        run_id=run_id,
                        key=key,
                        max_points=max_points,
                        experiment_id=run.experiment_id,
                        run_end_time=run.end_time,
                        latest_step=latest.step,
                        latest_timestamp=latest.timestamp,
                        latest_value=latest.value,
                        points=series.points,
                        steps=series.steps_json,
                        values=series.values_json,
                        minimum=series.minimum,
                        maximum=series.maximum,
                        last=series.last,
                    )
                )
        result.computed = len(read)
    if stale or new_rows:
        with transaction.atomic():
            if stale:
                MetricSeries.objects.filter(pk__in=stale).delete()
            # A concurrent request may have stored the same rows: theirs are as good.
            MetricSeries.objects.bulk_create(new_rows, batch_size=100, ignore_conflicts=True)
    return result


def forget_runs(run_ids: list[str]) -> int:
    """Delete the cached series of runs that were deleted (or no longer exist)."""
    if not run_ids:
        return 0
    deleted, _ = MetricSeries.objects.filter(run_id__in=run_ids).delete()
    return deleted
