"""Downsampling of metric histories for charts: min/max buckets.

A chart of 1,000 points looks the same as one of 100,000 as long as no spike is lost, so a
trace keeps its first and last points and, in each of (max_points - 2) // 2 equal buckets
of the points between them, the lowest and the highest value. The global minimum and
maximum are the extremes of their buckets, so they always survive — a loss spike at step
41,337 still shows. (LTTB keeps the visual shape too, but it picks one point per bucket
and can drop a one-step spike; min/max buckets cannot.)

Values that JSON cannot carry (NaN, ±inf; MLflow stores +inf as 1.8e308, which is kept)
are dropped first: a chart cannot draw them and the API's strict JSON would refuse them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 4  # first, last, min and max must fit


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


def downsample(steps: Sequence[int], values: Sequence[float], max_points: int) -> Downsampled:
    """At most `max_points` points of the series (x = steps, in logged order), keeping
    extremes; see the module docstring."""
    steps, values = finite_pairs(steps, values)
    keep = keep_indices(values, max_points)
    if len(keep) == len(values):
        kept_steps, kept_values = steps, values
    else:
        kept_steps = [steps[i] for i in keep]
        kept_values = [values[i] for i in keep]
    return Downsampled(
        steps=kept_steps,
        values=kept_values,
        points=len(values),
        minimum=min(values) if values else None,
        maximum=max(values) if values else None,
        last=values[-1] if values else None,
    )
