"""apps.core.numbers, the one place NaN/inf/MLflow's sentinels are decided: shown as NaN/inf,
strict JSON both ways, never ranked first; and the renderer and JSON field built on it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from django.template import Context, Template

from apps.core.numbers import (
    MLFLOW_FLOAT_MAX,
    JSONSafeEncoder,
    MetricsJSONDecoder,
    best,
    display,
    is_finite,
    json_restore,
    json_safe,
    normalise,
    rank_key,
)
from apps.core.renderers import NumberSafeJSONRenderer

NAN, INF = float("nan"), float("inf")


def strict(text: str | bytes) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_mlflow_sentinels_are_the_infinities_they_stand_for() -> None:
    assert normalise(MLFLOW_FLOAT_MAX) == INF and normalise(-MLFLOW_FLOAT_MAX) == -INF
    assert normalise("Infinity") == INF and normalise("-Infinity") == -INF and math.isnan(normalise("NaN"))
    assert normalise(1e308) == 1e308 and normalise("0.25") == 0.25
    assert [is_finite(v) for v in (0.5, NAN, INF, MLFLOW_FLOAT_MAX, None, "x", True)] == [True] + [False] * 6


def test_display_says_nan_and_inf_never_the_sentinel() -> None:
    assert [display(v) for v in (NAN, MLFLOW_FLOAT_MAX, -MLFLOW_FLOAT_MAX, INF, None)] == [
        "NaN",
        "inf",
        "-inf",
        "inf",
        "",
    ]
    assert display(0.123456789) == "0.123457" and display(1e-5) == "1e-05"


def test_json_safe_is_strict_json_and_restores_to_the_same_floats() -> None:
    value = {"metrics": {"a": NAN, "b": MLFLOW_FLOAT_MAX, "c": -INF, "d": 0.5}, "steps": (1, 2), "name": "x"}
    text = json.dumps(json_safe(value), allow_nan=False)
    parsed = strict(text)
    assert parsed["metrics"] == {"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 0.5}
    restored = json_restore(parsed)
    assert math.isnan(restored["metrics"]["a"]) and restored["metrics"]["b"] == INF
    assert restored["metrics"]["c"] == -INF and restored["steps"] == [1, 2]


def test_the_json_field_encoding_keeps_names_that_say_nan_as_text() -> None:
    evidence = {"candidate": {"run_name": "NaN", "metrics": {"loss": NAN, "acc": INF}}, "holder": None}
    text = json.dumps(evidence, cls=JSONSafeEncoder)
    strict(text)
    back = json.loads(text, cls=MetricsJSONDecoder)
    assert back["candidate"]["run_name"] == "NaN"
    assert math.isnan(back["candidate"]["metrics"]["loss"]) and back["candidate"]["metrics"]["acc"] == INF


@pytest.mark.parametrize("direction", ["min", "max"])
def test_non_finite_values_sort_last_and_never_win(direction: str) -> None:
    values = [NAN, 0.2, None, MLFLOW_FLOAT_MAX, -INF, 0.7]
    ordered = sorted(values, key=lambda v: rank_key(v, direction))
    finite = [0.2, 0.7] if direction == "min" else [0.7, 0.2]
    assert ordered[:2] == finite
    assert {display(v) for v in ordered[2:4]} == {"inf", "-inf"}
    assert ordered[4] is not None and math.isnan(ordered[4]) and ordered[5] is None
    assert best([("a", NAN), ("b", INF), ("c", 0.2), ("d", 0.7), ("e", -INF)], direction) == (
        ("c", 0.2) if direction == "min" else ("d", 0.7)
    )
    assert best([("a", NAN), ("b", MLFLOW_FLOAT_MAX)], direction) is None
    with pytest.raises(ValueError):
        rank_key(1.0, "up")


def test_the_api_renderer_writes_strict_json() -> None:
    body = NumberSafeJSONRenderer().render({"metrics": {"loss": NAN, "acc": MLFLOW_FLOAT_MAX}, "n": [INF, 1.0]})
    assert strict(body) == {"metrics": {"loss": "NaN", "acc": "Infinity"}, "n": ["Infinity", 1.0]}


def test_the_template_filters_show_nan_and_inf() -> None:
    template = Template(
        "{% load tracking %}{{ a|metric }}|{{ b|metric }}|{{ c|metric_fixed:4 }}|{{ d|metric_fixed:4 }}"
        "|{{ e|metric_fixed:4|default:'—' }}"
    )
    values = {"a": NAN, "b": MLFLOW_FLOAT_MAX, "c": -MLFLOW_FLOAT_MAX, "d": 0.95, "e": None}
    rendered = template.render(Context(values))
    assert rendered == "NaN|inf|-inf|0.9500|—"
