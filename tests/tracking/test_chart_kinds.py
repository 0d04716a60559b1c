"""The history charts fit the data (apps.tracking.charts.line_charts): a line against the
step, or against time when the steps do not vary; a bar per run for a metric logged once;
an empty state, not an axis from -1 to 1, when there is nothing to draw; NaN and ±inf
(MLflow's ±1.797e308 sentinels) marked, never plotted. Built from series as the cache
computes them, and through the compare and run pages over a FakeMlflow (which answers
+inf as 1.797e308 and NaN as "NaN", as MLflow's REST does)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from apps.registry.evidence import evidence_figure
from apps.tracking.charts import line_charts
from apps.tracking.runs import Run
from apps.tracking.series import Series, compute
from tests.conftest import client_for
from tests.tracking.fakes import FakeMlflow, FakeRun

SENTINEL = 1.7976931348623157e308
T0 = 1_700_000_000_000  # ms
START = T0 - 5_000


def _run(run_id: str, name: str = "") -> Run:
    return Run.from_mlflow(
        {
            "info": {
                "run_id": run_id,
                "run_name": name or run_id,
                "experiment_id": "1",
                "status": "FINISHED",
                "start_time": START,
                "end_time": T0 + 60_000,
            },
            "data": {},
        }
    )


def _charts(runs: list[Run], series: dict[tuple[str, str], Series], keys: list[str]) -> list[dict[str, Any]]:
    charts: list[dict[str, Any]] = [
        json.loads(c.json) for c in line_charts(runs, keys, lambda r, k: series.get((r, k)))
    ]
    return charts


def _series(run_id: str, key: str, points: list[tuple[int, int, float]]) -> Series:
    return compute(run_id, key, [p[0] for p in points], [p[2] for p in points], 1000, timestamps=[p[1] for p in points])


def test_a_spike_to_inf_is_marked_and_the_points_after_it_are_still_drawn() -> None:
    points = [(step, T0 + step * 1000, 1.0 / (step + 1)) for step in range(20)]
    points[12] = (12, T0 + 12_000, SENTINEL)  # +inf, as MLflow stores it
    points[15] = (15, T0 + 15_000, float("nan"))
    points[17] = (17, T0 + 17_000, -SENTINEL)
    run = _run("a" * 32, "spiky")
    [chart] = _charts([run], {(run.run_id, "loss"): _series(run.run_id, "loss", points)}, ["loss"])

    assert chart["kind"] == "line"
    assert chart["axis"] == "step"
    assert "e+308" not in json.dumps(chart) and "1.7976931348623157e308" not in json.dumps(chart)
    line, marks = chart["figure"]["data"]
    # Every finite point is drawn, those after the spike included; a gap (null) where each
    # non-finite point was, so the line is not joined across it.
    drawn = [(x, y) for x, y in zip(line["x"], line["y"], strict=True) if y is not None]
    assert drawn == [(p[0], p[2]) for p in points if p[0] not in (12, 15, 17)]
    assert [x for x, y in zip(line["x"], line["y"], strict=True) if y is None] == [12, 15, 17]
    # Markers say what and where: at the top for inf and NaN, at the bottom for -inf.
    assert marks["yaxis"] == "y2" and marks["x"] == [12, 15, 17]
    assert marks["text"] == ["inf at step 12", "NaN at step 15", "-inf at step 17"]
    assert marks["y"][0] > 0.5 and marks["y"][1] > 0.5 and marks["y"][2] < 0.5
    assert chart["figure"]["layout"]["yaxis2"]["range"] == [0, 1]
    # The switch can redraw the markers against time too.
    assert chart["alt"][1]["time"] == [T0 + 12_000, T0 + 15_000, T0 + 17_000]


def test_a_metric_logged_without_a_step_is_drawn_against_time() -> None:
    runs = [_run("a" * 32), _run("b" * 32)]
    series = {
        (run.run_id, "epoch_loss"): _series(
            run.run_id, "epoch_loss", [(0, T0 + i * 30_000 + n, 1.0 - i / 10) for i in range(5)]
        )
        for n, run in enumerate(runs)
    }
    [chart] = _charts(runs, series, ["epoch_loss"])

    assert chart["kind"] == "line"
    assert chart["axis"] == "time"
    first = chart["figure"]["data"][0]
    assert first["x"] == [T0 + i * 30_000 for i in range(5)]  # ms since the epoch, not step 0 x5
    assert chart["figure"]["layout"]["xaxis"]["type"] == "date"
    # What the step / time / relative switch redraws from: the steps (the times are the
    # trace's x) and the run's start.
    assert chart["alt"][0] == {"step": [0] * 5, "t0": START}


def test_steps_that_vary_keep_the_step_axis_with_times_for_the_switch() -> None:
    run = _run("a" * 32)
    points = [(step, T0 + step * 7, 0.5) for step in range(10)]
    [chart] = _charts([run], {(run.run_id, "loss"): _series(run.run_id, "loss", points)}, ["loss"])
    assert chart["axis"] == "step"
    assert chart["figure"]["data"][0]["x"] == list(range(10))
    assert chart["alt"][0] == {"time": [p[1] for p in points], "t0": START}


def test_metrics_logged_once_are_a_bar_per_run() -> None:
    runs = [_run("a" * 32, "small"), _run("b" * 32, "large"), _run("c" * 32, "broken")]
    series = {
        (runs[0].run_id, "accuracy"): _series(runs[0].run_id, "accuracy", [(0, T0, 0.91)]),
        (runs[1].run_id, "accuracy"): _series(runs[1].run_id, "accuracy", [(0, T0, 0.87)]),
        (runs[2].run_id, "accuracy"): _series(runs[2].run_id, "accuracy", [(0, T0, float("nan"))]),
    }
    [chart] = _charts(runs, series, ["accuracy"])

    assert chart["kind"] == "bar"
    bars = chart["figure"]["data"][0]
    assert bars["type"] == "bar"
    assert bars["x"] == ["small", "large", "broken"]
    assert bars["y"] == [0.91, 0.87, None]
    # The NaN run is named where its bar would be, not left as a silent hole.
    [marks] = chart["figure"]["data"][1:]
    assert marks["x"] == ["broken"] and marks["text"] == ["NaN"]
    assert "xaxis" in chart["figure"]["layout"] and chart["figure"]["layout"]["xaxis"]["type"] == "category"


def test_nothing_to_draw_is_an_empty_state_without_a_figure() -> None:
    runs = [_run("a" * 32), _run("b" * 32)]
    series = {(runs[0].run_id, "loss"): _series(runs[0].run_id, "loss", [])}
    [empty, missing] = _charts(runs, series, ["loss", "never_fetched"])
    for chart in (empty, missing):
        assert chart["kind"] == "empty"
        assert "figure" not in chart
        assert chart["message"]


@pytest.fixture
def linked(project: Project) -> Project:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    project.refresh_from_db()
    return project


def _add(fake: FakeMlflow, run_id: str, history: dict[str, list[tuple[int, int, float]]]) -> str:
    return fake.add(FakeRun(run_id=run_id, experiment_id="1", name=f"run-{run_id[:3]}", history=history)).run_id


@pytest.mark.django_db
def test_the_compare_page_chooses_the_chart_and_the_cache_keeps_what_it_needs(
    vic: User, linked: Project, fake_mlflow: FakeMlflow
) -> None:
    spike = [(s, T0 + s * 1000, float("inf") if s == 3 else 1.0 / (s + 1)) for s in range(8)]
    ids = [
        _add(
            fake_mlflow,
            "a" * 32,
            {
                "loss": spike,
                "epoch_loss": [(0, T0 + i * 60_000, 1.0 - i / 10) for i in range(4)],
                "accuracy": [(0, T0, 0.9)],
            },
        ),
        _add(
            fake_mlflow,
            "b" * 32,
            {
                "loss": [(s, T0 + s * 1000, 0.5) for s in range(8)],
                "epoch_loss": [(0, T0 + i * 60_000, 0.8) for i in range(4)],
                "accuracy": [(0, T0, 0.8)],
            },
        ),
    ]
    client = client_for(vic)
    bodies = []
    for _ in range(2):  # computed, then from the cache: the same charts
        response = client.get(reverse("tracking:compare"), {"run_ids": ",".join(ids)})
        assert response.status_code == 200
        bodies.append([c.json for c in response.context["charts"]])
        html = response.content.decode()
        assert "e+308" not in "".join(bodies[-1])
        assert "data-axis-switch" in html
    assert bodies[0] == bodies[1]
    charts = {c["key"]: c for c in map(json.loads, bodies[1])}
    assert charts["accuracy"]["kind"] == "bar"
    assert charts["epoch_loss"]["kind"] == "line" and charts["epoch_loss"]["axis"] == "time"
    assert charts["epoch_loss"]["figure"]["data"][0]["x"] == [T0 + i * 60_000 for i in range(4)]
    assert charts["loss"]["axis"] == "step"
    line = charts["loss"]["figure"]["data"][0]
    assert [y for y in line["y"] if y is not None] == [1.0 / (s + 1) for s in range(8) if s != 3]
    marks = [t for t in charts["loss"]["figure"]["data"] if t.get("yaxis") == "y2"]
    assert [m["text"] for m in marks] == [["inf at step 3"]]


@pytest.mark.django_db
def test_the_run_page_shows_an_empty_state_for_a_metric_with_only_non_finite_values(
    vic: User, linked: Project, fake_mlflow: FakeMlflow
) -> None:
    run_id = _add(
        fake_mlflow,
        "c" * 32,
        {
            "loss": [(s, T0 + s, float("nan")) for s in range(3)] + [(3, T0 + 3, float("inf"))],
            "lr": [(s, T0 + s, 0.1 * s) for s in range(3)],
        },
    )
    response = client_for(vic).get(reverse("tracking:run", args=[linked.team.slug, linked.slug, run_id]))
    assert response.status_code == 200
    loss, lr = [json.loads(c.json) for c in response.context["charts"]]
    assert loss["kind"] == "empty" and "figure" not in loss
    assert loss["message"] == "No finite values of loss to draw (3 NaN, 1 inf)."
    assert lr["kind"] == "line" and lr["id"] == "metric-1"
    html = response.content.decode()
    assert 'id="metric-0"' in html and "data-axis-switch" in html
    # The empty one is a sentence (no container to draw an axis in); the other a chart.
    assert "No finite values of loss to draw (3 NaN, 1 inf).</p>" in html
    assert 'data-chart="metric-0-data"' not in html and 'data-chart="metric-1-data"' in html


def test_the_promotion_evidence_chart_names_non_finite_values_instead_of_drawing_them() -> None:
    evidence = {
        "alias": "champion",
        "candidate": {"version": 2, "metrics": {"loss": float("nan"), "accuracy": SENTINEL, "f1": 0.7}},
        "holder": {"version": 1, "metrics": {"loss": 0.3, "accuracy": 0.8, "f1": "-Infinity"}},
    }
    figure = evidence_figure(evidence)
    assert figure is not None
    text = json.dumps(figure)
    assert "e+308" not in text and "1.7976931348623157e308" not in text
    candidate, holder = figure["data"]
    # Metrics sorted: accuracy, f1, loss. A non-finite value is a zero-height bar labelled
    # with what it is; a finite one is its bar, unlabelled.
    assert candidate["y"] == [0.0, 0.7, 0.0] and candidate["text"] == ["inf", "", "NaN"]
    assert holder["y"] == [0.8, 0.0, 0.3] and holder["text"] == ["", "-inf", ""]
