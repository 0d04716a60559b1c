"""Comparing runs: the query, the summary with the best run per metric, the API body and
the CSV export. Used by the compare page and GET /api/v1/runs/compare/ alike."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.http import QueryDict

from apps.core.errors import InvalidInput
from apps.core.numbers import best as best_of
from apps.core.numbers import display, is_finite, json_safe, normalise_optional
from apps.tracking.downsample import MIN_POINTS
from apps.tracking.keys import export_tag_keys
from apps.tracking.lookups import get_runs_for_user, parse_run_ids
from apps.tracking.runs import Run
from apps.tracking.series import DEFAULT_MAX_POINTS, MAX_MAX_POINTS, Series, SeriesSet, forget_runs, histories

# Lower is better for these (substring of the metric name)...
LOSS_LIKE = ("loss", "error", "mse", "mae", "rmse", "mape", "perplexity", "latency", "regret", "cost")
# ...and for these words of it (so "err" and "time" count, "iterations" and "accuracy" do not).
LOSS_WORDS = frozenset({"err", "wer", "cer", "time", "duration", "seconds", "ms"})
DIRECTIONS = ("min", "max")


def default_direction(key: str) -> str:
    """min for loss-like metric names, max otherwise."""
    lower = key.lower()
    if any(word in lower for word in LOSS_LIKE):
        return "min"
    return "min" if LOSS_WORDS.intersection(re.split(r"[^a-z0-9]+", lower)) else "max"


def _split(values: Iterable[str]) -> list[str]:
    items: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip() and part.strip() not in items:
                items.append(part.strip())
    return items


@dataclass(frozen=True)
class CompareQuery:
    run_ids: list[str]
    metrics: list[str] | None  # None: every metric of the runs
    max_points: int
    directions: dict[str, str]  # per-metric overrides of default_direction
    refresh: bool = False  # re-read every history from MLflow instead of the portal's cache


def parse_compare_query(params: QueryDict) -> CompareQuery:
    """run_ids (comma-separated and/or repeated), metrics, max_points (4..10,000, default
    1,000), dir (metric:min,metric:max) and refresh (1: re-read the histories from MLflow).
    Bad input is a 400 naming the field."""
    run_ids = parse_run_ids(params.getlist("run_ids"))
    metrics = _split(params.getlist("metrics")) if params.getlist("metrics") else None
    raw = params.get("max_points", "") or str(DEFAULT_MAX_POINTS)
    try:
        max_points = int(raw)
    except ValueError:
        raise InvalidInput.field("max_points", "max_points must be a whole number.") from None
    if not MIN_POINTS <= max_points <= MAX_MAX_POINTS:
        raise InvalidInput.field("max_points", f"max_points must be between {MIN_POINTS} and {MAX_MAX_POINTS}.")
    directions: dict[str, str] = {}
    for item in _split(params.getlist("dir")):
        key, _, direction = item.rpartition(":")
        if not key or direction not in DIRECTIONS:
            raise InvalidInput.field("dir", f"{item!r}: write metric:min or metric:max.")
        directions[key] = direction
    refresh = params.get("refresh", "")
    if refresh not in ("", "0", "1"):
        raise InvalidInput.field("refresh", "refresh must be 0 or 1.")
    return CompareQuery(run_ids, metrics, max_points, directions, refresh == "1")


@dataclass(frozen=True)
class Best:
    run_id: str
    value: float
    direction: str


@dataclass
class Comparison:
    """Runs side by side: params, latest metrics, downsampled series (unless asked without),
    the best run per metric, and the runs that could not be shown (deleted)."""

    query: CompareQuery
    runs: list[Run]
    deleted: list[str]
    metric_keys: list[str]
    param_keys: list[str]
    series: SeriesSet | None

    def direction(self, key: str) -> str:
        return self.query.directions.get(key) or default_direction(key)

    @property
    def best(self) -> dict[str, Best]:
        """The best run per metric by its latest value in the metric's direction; the first
        of equals wins, in the order asked. Only finite values compete: NaN, ±inf (and
        MLflow's ±1.797e308 sentinels) never win, and a metric with no finite value has no
        best (apps.core.numbers.best)."""
        found: dict[str, Best] = {}
        for key in self.metric_keys:
            direction = self.direction(key)
            scored = [(run.run_id, run.latest[key].value) for run in self.runs if key in run.latest]
            pick = best_of(scored, direction)
            if pick is not None:
                found[key] = Best(pick[0], pick[1], direction)
        return found

    def series_of(self, run_id: str, key: str) -> Series | None:
        return self.series.series.get((run_id, key)) if self.series is not None else None

    def summary(self, run: Run, key: str) -> dict[str, Any] | None:
        if key not in run.latest:
            return None
        found = self.series_of(run.run_id, key)
        return {
            "last": run.latest[key].value,
            "min": normalise_optional(found.minimum) if found else None,
            "max": normalise_optional(found.maximum) if found else None,
            "points": found.points if found else None,
        }

    @property
    def as_of(self) -> datetime | None:
        """When the oldest cached history shown was read from MLflow (None: every history
        was read just now). With the store check (PLINTH_MLFLOW_STORE_URI) a cached history
        is exact; over REST alone it may miss points logged late to a finished run for up to
        PLINTH_METRIC_CACHE_MAX_AGE seconds, so pages show this time and offer a refresh."""
        if self.series is None:
            return None
        times = [found.as_of for found in self.series.series.values() if found.as_of is not None]
        return min(times) if times else None

    @property
    def differing_params(self) -> list[str]:
        return [key for key in self.param_keys if len({run.params.get(key) for run in self.runs}) > 1]

    @property
    def problems(self) -> list[dict[str, str]]:
        gone = [{"run_id": run_id, "reason": "deleted"} for run_id in self.deleted]
        broken = (
            [{"run_id": r, "metric": k, "reason": m} for (r, k), m in sorted(self.series.errors.items())]
            if self.series is not None
            else []
        )
        return gone + broken


def build_comparison(user: Any, query: CompareQuery, *, with_series: bool = True) -> Comparison:
    """Resolve the runs for `user` (404 when one is not theirs to see), drop deleted ones
    (and their cached series), read the series of the chosen metrics."""
    found = get_runs_for_user(user, query.run_ids)
    if found.deleted:
        forget_runs(found.deleted)
    runs = found.runs
    all_metrics = sorted({key for run in runs for key in run.latest})
    metric_keys = [key for key in query.metrics if key in all_metrics] if query.metrics is not None else all_metrics
    param_keys = sorted({key for run in runs for key in run.params})
    series = histories(runs, metric_keys, query.max_points, refresh=query.refresh) if with_series else None
    return Comparison(query, runs, found.deleted, metric_keys, param_keys, series)


def comparison_json(comparison: Comparison) -> str:
    """The API body. The series are spliced in as the stored JSON text: a warm answer of
    100 runs x 10 metrics x 1,000 points is ~20 MB that is never parsed or re-encoded.
    Non-finite numbers of the head (last, min, max, best) are the strings "NaN",
    "Infinity", "-Infinity" (apps.core.numbers.json_safe): the body is strict JSON."""
    best = comparison.best
    head = {
        "runs": [
            {
                **run.as_api(),
                "summary": {key: comparison.summary(run, key) for key in comparison.metric_keys if key in run.latest},
            }
            for run in comparison.runs
        ],
        "metrics": comparison.metric_keys,
        "max_points": comparison.query.max_points,
        "best": {key: {"run_id": b.run_id, "value": b.value, "direction": b.direction} for key, b in best.items()},
        "missing": comparison.problems,
        "as_of": comparison.as_of.isoformat() if comparison.as_of else None,
    }
    parts = [json.dumps(json_safe(head), allow_nan=False)[:-1], ',"series":{']
    for index, key in enumerate(comparison.metric_keys):
        found = [(run.run_id, comparison.series_of(run.run_id, key)) for run in comparison.runs]
        inner = ",".join(json.dumps(run_id) + ":" + series.as_json() for run_id, series in found if series is not None)
        parts.append(("," if index else "") + json.dumps(key) + ":{" + inner + "}")
    parts.append("}}")
    return "".join(parts)


def _csv_cell(value: Any) -> Any:
    # Spreadsheets run cells that start with these as formulas: quote them (numbers stay).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def _metric_cell(value: float | None) -> str:
    if value is None:  # never logged
        return ""
    return repr(value) if is_finite(value) else display(value)


def comparison_csv(comparison: Comparison) -> str:
    """The summary table as CSV: one row per run, params, latest metric values, then tags
    (`tag.<key>`, empty when a run lacks the tag; MLflow's `mlflow.*` tags only for the
    few of apps.tracking.keys.EXPORTED_SYSTEM_TAGS). A metric
    the run never logged is an empty cell; a logged NaN/±inf is "NaN"/"inf"/"-inf" (MLflow's
    ±1.797e308 sentinels included), which spreadsheets and pandas read back as those floats;
    finite values are written exactly (repr)."""
    out = io.StringIO()
    writer = csv.writer(out)
    params, metrics = comparison.param_keys, comparison.metric_keys
    tags = export_tag_keys(comparison.runs)  # user tags and a few of MLflow's (apps.tracking.keys)
    writer.writerow(
        ["run_id", "name", "project", "status", "author", "start_time", "duration_seconds"]
        + [f"params.{k}" for k in params]
        + [f"metrics.{k}" for k in metrics]
        + [f"tag.{k}" for k in tags]
    )
    for run in comparison.runs:
        started = datetime.fromtimestamp(run.start_time / 1000, tz=UTC).isoformat() if run.start_time else ""
        writer.writerow(
            [_csv_cell(v) for v in (run.run_id, run.name, run.project.full_slug if run.project else "", run.status)]
            + [_csv_cell(run.author), started, "" if run.duration_seconds is None else f"{run.duration_seconds:g}"]
            + [_csv_cell(run.params.get(k, "")) for k in params]
            + [_metric_cell(run.metrics.get(k)) for k in metrics]
            + [_csv_cell(run.tags.get(k, "")) for k in tags]
        )
    return out.getvalue()
