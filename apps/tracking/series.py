"""Metric histories for charts: downsampled, and cached for finished runs.

The rule that keeps the cache honest: a stored series is served only when the runs/search
answer of the *same request* says the run is finished, with the end time and the latest
point of the metric the row was computed from. Runs still running are read live every
time and their rows (left by a run that was resumed) are deleted; a deleted run never
reaches this module (the lookups drop it) and its rows are deleted by `forget_runs`.

A point written after the end at an *earlier* step changes neither the status, the end
time nor the latest point. Where the portal may read MLflow's store
(`PLINTH_MLFLOW_STORE_URI`, apps.tracking.store), the same request also compares every
row with the store's count and newest timestamp of the metric (one GROUP BY query): the
cache can only be missing, never stale, and what it serves equals a fresh computation;
missing histories are then read and cut by the database in one query. Without the store
(REST only), a row is served for at most `PLINTH_METRIC_CACHE_MAX_AGE` seconds after it
was computed (its `as_of` says when; `refresh=True` recomputes at once).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.tracking.downsample import downsample
from apps.tracking.fetch import Want, read_histories
from apps.tracking.models import MetricSeries
from apps.tracking.runs import Run
from apps.tracking.store import Fingerprint, StoreUnavailable

logger = logging.getLogger(__name__)

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
    "timestamps",
    "nonfinite",
    "logged",
    "last_timestamp",
    "computed_at",
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
    # JSON arrays: the wall-clock time (ms) of each kept point ("[]" when unknown), and the
    # non-finite points [[step, timestamp, "NaN" | "inf" | "-inf"], ...] (charts mark them).
    timestamps_json: str = "[]"
    nonfinite_json: str = "[]"
    # The metric's fingerprint where known (points logged, NaN included; newest timestamp,
    # ms), and when the series was computed (None: just now).
    logged: int | None = None
    last_timestamp: int | None = None
    as_of: datetime | None = None

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

    @property
    def timestamps(self) -> list[int]:
        timestamps: list[int] = json.loads(self.timestamps_json)
        return timestamps

    @property
    def nonfinite(self) -> list[list[Any]]:
        marks: list[list[Any]] = json.loads(self.nonfinite_json)
        return marks


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
        and (row[4], row[5]) == (latest.step, latest.timestamp)
        and _same_value(row[6], latest.value)
    )


def _same_value(stored: float | None, latest: float | None) -> bool:
    """Whether the stored fingerprint value is MLflow's latest value. NaN equals NaN here,
    and a stored NULL matches a NaN (SQLite stores a NaN float as NULL)."""
    if stored is None or latest is None or math.isnan(stored) or math.isnan(latest):
        return (stored is None or math.isnan(stored)) and (latest is None or math.isnan(latest))
    return stored == latest


def compute(
    run_id: str,
    key: str,
    steps: list[int],
    values: list[float],
    max_points: int,
    timestamps: list[int] | None = None,
) -> Series:
    """The series a fresh computation gives (also what gets cached); `timestamps` (ms, one
    per point) are kept for the kept points when given."""
    return _series_of(run_id, key, downsample(steps, values, max_points, timestamps))


def _series_of(
    run_id: str, key: str, down: Any, logged: int | None = None, last_timestamp: int | None = None
) -> Series:
    """A freshly cut series (`down`: apps.tracking.downsample.Downsampled, from Python or
    from the store's SQL) as a Series, with the metric's fingerprint where known."""
    return Series(
        run_id,
        key,
        _dumps(down.steps),
        _dumps(down.values),
        down.points,
        down.minimum,
        down.maximum,
        down.last,
        False,
        _dumps(down.timestamps),
        json.dumps(down.nonfinite, separators=(",", ":")),
        logged,
        last_timestamp,
    )


def _store_fingerprints(run_ids: list[str]) -> dict[tuple[str, str], Fingerprint] | None:
    """The store's fingerprint of every metric of `run_ids`, or None when the store is not
    configured or cannot be read (then the REST rules apply)."""
    from apps.tracking import store

    if not store.enabled():
        return None
    try:
        return store.fingerprints(run_ids)
    except StoreUnavailable as exc:
        logger.warning("metric cache: %s", exc)
        return None


def _verified(row: tuple[Any, ...], checks: dict[tuple[str, str], Fingerprint] | None, oldest: datetime) -> bool:
    """Whether a row that matches the run's latest point also holds every point: the store's
    count and newest timestamp equal the row's, or (REST only) the row is young enough."""
    if checks is None:
        return bool(row[17] >= oldest)
    found = checks.get((str(row[1]), str(row[2])))
    return found is not None and (row[15], row[16]) == (found.logged, found.last_timestamp)


def _from_store(
    wants: list[Want], checks: dict[tuple[str, str], Fingerprint], by_id: dict[str, Run], max_points: int
) -> dict[tuple[str, str], Series]:
    """The series of `wants` that the store can give, cut by the database in one query. A
    metric the store has not caught up with (a replica behind runs/search's latest point)
    is left out, for REST to read; the store failing leaves everything to REST."""
    from apps.tracking import store

    pairs = []
    for want in wants:
        found = checks.get((want.run_id, want.key))
        latest = by_id[want.run_id].latest[want.key]
        if found is not None and found.last_timestamp >= latest.timestamp:
            pairs.append((want.run_id, want.key))
    try:
        cut = store.read_downsampled(pairs, max_points)
    except StoreUnavailable as exc:
        logger.warning("metric cache: %s", exc)
        return {}
    return {
        pair: _series_of(pair[0], pair[1], down, checks[pair].logged, checks[pair].last_timestamp)
        for pair, down in cut.items()
    }


def histories(
    runs: list[Run], keys: list[str] | None, max_points: int = DEFAULT_MAX_POINTS, *, refresh: bool = False
) -> SeriesSet:
    """Series of `keys` (None: every metric each run has) of `runs`, at most `max_points`
    points each. Finished runs come from the cache when it is fresh (see the module; never
    with `refresh`) and are cached when not; running runs are read live. One query reads
    the cache, one transaction writes it; histories come from MLflow's store in one query
    where it may be read (apps.tracking.store), else from MLflow's REST API with a few
    parallel calls (apps.tracking.fetch)."""
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
    checks = _store_fingerprints(list(by_id))
    oldest = timezone.now() - timedelta(seconds=float(settings.PLINTH_METRIC_CACHE_MAX_AGE))
    for row in rows.values_list(*_FIELDS):
        run_id, key = str(row[1]), str(row[2])
        run = by_id[run_id]
        if (run_id, key) in wanted and not refresh and _fresh(run, key, row) and _verified(row, checks, oldest):
            result.series[(run_id, key)] = Series(
                run_id, key, str(row[8]), str(row[9]), int(row[7]), row[10], row[11], row[12], True,
                str(row[13]), str(row[14]), row[15], row[16], row[17],
            )  # fmt: skip
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
        read = _from_store(missing, checks, by_id, max_points) if checks is not None else {}
        rest = [want for want in missing if (want.run_id, want.key) not in read]
        if rest:
            from_rest, result.errors = read_histories(
                rest,
                lambda run_id, key, found: dataclasses.replace(
                    compute(run_id, key, found.steps, found.values, max_points, found.timestamps),
                    logged=len(found.steps),
                    last_timestamp=max(found.timestamps, default=0),
                ),
            )
            read.update(from_rest)
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
                        timestamps=series.timestamps_json,
                        nonfinite=series.nonfinite_json,
                        logged=series.logged,
                        last_timestamp=series.last_timestamp,
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
