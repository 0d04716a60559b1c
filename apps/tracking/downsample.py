"""Downsampling of metric histories for charts: min/max buckets.

A chart of 1,000 points looks the same as one of 100,000 as long as no spike is lost, so a
trace keeps its first and last points and, in each of (max_points - 2) // 2 equal buckets
of the points between them, the lowest and the highest value. The global minimum and
maximum are the extremes of their buckets, so they always survive — a loss spike at step
41,337 still shows. (LTTB keeps the visual shape too, but it picks one point per bucket
and can drop a one-step spike; min/max buckets cannot.)

Values that JSON cannot carry (NaN, ±inf, and MLflow's ±1.797e308 sentinels for ±inf,
apps.core.numbers) are taken out first: a chart cannot draw them on a number axis and the
API's strict JSON would refuse them. Where they were is kept (`Downsampled.nonfinite`, the
first MAX_NONFINITE of them) so that a chart can mark them instead of hiding them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from apps.core.numbers import MLFLOW_FLOAT_MAX, display, normalise

MIN_POINTS = 4  # first, last, min and max must fit
MAX_NONFINITE = 200  # non-finite points remembered per series (a chart marks them)


@dataclass(frozen=True)
class Downsampled:
    """A downsampled series and the facts about the whole one (`points`: how many finite
    points were logged; `minimum`/`maximum`/`last`: of the whole series, exact)."""

    steps: list[int]
    values: list[float]
    points: int
    minimum: float | None
    maximum: float | None
    last: float | None
    # Wall-clock time (ms since the epoch) of each kept point; empty when not known.
    timestamps: list[int] = field(default_factory=list)
    # The non-finite points [step, timestamp, "NaN" | "inf" | "-inf"], in logged order.
    nonfinite: list[list[int | str]] = field(default_factory=list)


def finite_pairs(steps: Sequence[int], values: Sequence[float]) -> tuple[list[int], list[float]]:
    """The pairs whose value is a finite number."""
    if np.isfinite(np.asarray(values, dtype=float)).all():  # the usual case, without a Python loop
        return list(steps), list(values)
    kept_steps: list[int] = []
    kept_values: list[float] = []
    for step, value in zip(steps, values, strict=True):
        if value is not None and math.isfinite(value):
            kept_steps.append(int(step))
            kept_values.append(float(value))
    return kept_steps, kept_values


def keep_indices(values: Sequence[float], max_points: int) -> list[int]:
    """Indices (ascending) of the points to keep: all of them when they fit, otherwise the
    first, the last, and the min and max of each bucket between them. Never more than
    `max_points`; always the first, the last, a global minimum and a global maximum."""
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be at least {MIN_POINTS}")
    n = len(values)
    if n <= max_points:
        return list(range(n))
    interior = n - 2
    buckets = (max_points - 2) // 2
    positions = np.arange(interior)
    bucket = (positions * buckets) // interior  # non-decreasing: buckets are contiguous runs
    inner = np.asarray(values[1:-1], dtype=float)
    # Sort by bucket, then value, then position: the first row of a bucket is its minimum
    # (earliest on ties), the last row its maximum (latest on ties).
    order = np.lexsort((positions, inner, bucket))
    sorted_buckets = bucket[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    chosen = np.concatenate(([0], order[starts] + 1, order[ends] + 1, [n - 1]))
    return [int(i) for i in np.unique(chosen)]


def _split_finite(
    steps: Sequence[int], values: Sequence[float], timestamps: Sequence[int]
) -> tuple[list[int], list[float], list[int], list[list[int | str]]]:
    """(steps, values, timestamps) of the finite points, and [step, timestamp, kind] of the
    others (NaN, ±inf, MLflow's ±1.797e308 sentinels; kind as apps.core.numbers.display)."""
    array = np.asarray(values, dtype=float)
    if (np.isfinite(array) & (np.abs(array) < MLFLOW_FLOAT_MAX)).all():  # the usual case, no loop
        return list(steps), list(values), list(timestamps), []
    kept_steps: list[int] = []
    kept_values: list[float] = []
    kept_times: list[int] = []
    marks: list[list[int | str]] = []
    for index, (step, value) in enumerate(zip(steps, values, strict=True)):
        number = math.nan if value is None else normalise(value)
        stamp = int(timestamps[index]) if timestamps else 0
        if math.isfinite(number):
            kept_steps.append(int(step))
            kept_values.append(number)
            if timestamps:
                kept_times.append(stamp)
        elif len(marks) < MAX_NONFINITE:
            marks.append([int(step), stamp, display(number)])
    return kept_steps, kept_values, kept_times, marks


def downsample(
    steps: Sequence[int], values: Sequence[float], max_points: int, timestamps: Sequence[int] | None = None
) -> Downsampled:
    """At most `max_points` points of the series (x = steps, in logged order), keeping
    extremes; see the module docstring. `timestamps` (ms, one per point, optional) are
    kept for the kept points, so a chart can draw the series against time."""
    if timestamps is not None and len(timestamps) != len(steps):
        timestamps = None
    steps, values, times, marks = _split_finite(steps, values, timestamps or [])
    keep = keep_indices(values, max_points)
    if len(keep) == len(values):
        kept_steps, kept_values, kept_times = steps, values, times
    else:
        kept_steps = [steps[i] for i in keep]
        kept_values = [values[i] for i in keep]
        kept_times = [times[i] for i in keep] if times else []
    return Downsampled(
        steps=kept_steps,
        values=kept_values,
        points=len(values),
        minimum=min(values) if values else None,
        maximum=max(values) if values else None,
        last=values[-1] if values else None,
        timestamps=kept_times,
        nonfinite=marks,
    )
