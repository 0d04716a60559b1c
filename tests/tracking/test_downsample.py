"""Downsampling keeps the first, last, min and max of every series and never returns more
than max_points — checked on thousands of random series of many shapes (hypothesis is not
a dependency here; a seeded generator makes the same cases on every run)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

from apps.tracking.downsample import MIN_POINTS, downsample, keep_indices

SEED = 20_240_601


def shapes(rng: random.Random, n: int) -> Iterator[tuple[str, list[float]]]:
    yield "noise", [rng.gauss(0, 1) for _ in range(n)]
    yield "walk", list(_walk(rng, n))
    yield "constant", [1.5] * n
    yield "increasing", [float(i) for i in range(n)]
    yield "decreasing", [float(-i) for i in range(n)]
    spiky = [math.sin(i / 50) for i in range(n)]
    if n > 2:
        spiky[rng.randrange(1, n - 1)] = 1e6
        spiky[rng.randrange(1, n - 1)] = -1e6
    yield "spikes", spiky
    yield "few values", [float(rng.choice([0, 1, 2])) for _ in range(n)]
    yield "extremes at the ends", [-9.0] + [rng.random() for _ in range(max(0, n - 2))] + [9.0]


def _walk(rng: random.Random, n: int) -> Iterator[float]:
    value = 0.0
    for _ in range(n):
        value += rng.gauss(0, 1)
        yield value


def cases() -> Iterator[tuple[str, list[float], int]]:
    rng = random.Random(SEED)
    for _ in range(150):
        n = rng.choice([1, 2, 3, 5, 10, 999, 1000, 1001, 1002]) if rng.random() < 0.3 else rng.randint(0, 5_000)
        max_points = rng.choice([MIN_POINTS, 5, 6, 7, 10, 100, 999, 1000, rng.randint(MIN_POINTS, 3000)])
        for name, values in shapes(rng, n):
            yield name, values, max_points


def test_every_series_keeps_first_last_min_max_within_max_points() -> None:
    checked = 0
    for name, values, max_points in cases():
        steps = list(range(0, 3 * len(values), 3))
        down = downsample(steps, values, max_points)
        label = f"{name}, {len(values)} points, max_points {max_points}"
        assert len(down.steps) == len(down.values) <= max_points, label
        if not values:
            assert down.steps == [] and down.minimum is None, label
            continue
        assert down.steps == sorted(set(down.steps)), f"{label}: order or duplicates"
        assert (down.steps[0], down.values[0]) == (steps[0], values[0]), f"{label}: first"
        assert (down.steps[-1], down.values[-1]) == (steps[-1], values[-1]), f"{label}: last"
        assert min(down.values) == min(values) == down.minimum, f"{label}: min"
        assert max(down.values) == max(values) == down.maximum, f"{label}: max"
        assert down.points == len(values) and down.last == values[-1]
        for step, value in zip(down.steps, down.values, strict=True):
            assert values[step // 3] == value, f"{label}: a kept point moved"
        if len(values) <= max_points:
            assert down.values == values, f"{label}: a series that fits must be kept whole"
        checked += 1
    assert checked > 1000


def test_each_bucket_keeps_its_own_extremes() -> None:
    """Not only the global extremes: a spike in any part of the series shows."""
    rng = random.Random(SEED)
    values = [rng.random() for _ in range(100_000)]
    spikes = {1_000: 50.0, 25_000: -40.0, 60_000: 30.0, 99_000: -20.0}
    for index, value in spikes.items():
        values[index] = value
    kept = keep_indices(values, 1000)
    assert len(kept) <= 1000
    assert set(spikes) <= set(kept)


def test_values_json_cannot_carry_are_dropped() -> None:
    down = downsample([0, 1, 2, 3], [1.0, float("nan"), float("inf"), 2.0], 10)
    assert (down.steps, down.values, down.points) == ([0, 3], [1.0, 2.0], 2)


def test_max_points_below_four_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        keep_indices([1.0] * 10, 3)
