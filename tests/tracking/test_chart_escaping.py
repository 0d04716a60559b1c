"""Text from MLflow or users that a chart shows is escaped for Plotly, which renders a
subset of HTML in legends, hover labels, titles and tick labels: a run called
`<a href="https://evil.example/">click me</a>` must not become a live link. Checked on the
figures as the browser receives them (parsed JSON), for every module that builds charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.gpus.charts import heatmap_figure, launch_figure, usage_figure
from apps.gpus.usage import UsageRow
from apps.launches.charts import sweep_figure
from apps.launches.models import Launch, Sweep
from apps.projects.models import ExperimentState, Project
from apps.registry.evidence import evidence_figure
from tests.conftest import client_for
from tests.tracking.fakes import FakeMlflow, make_run

LINK = '<a href="https://evil.example/">click me</a>'
KEY = '<a href="https://evil.example/">lr</a>'
VALUE = "<b>big</b>"
METRIC = "<i>loss</i>"


def _text_of(figure: Any) -> str:
    """Every string of a figure as Plotly gets it (JSON parsed, then dumped unescaped)."""
    if isinstance(figure, str):
        figure = json.loads(figure)
    return json.dumps(figure, ensure_ascii=False, default=str)


def _assert_inert(figure: Any) -> None:
    text = _text_of(figure)
    assert "<a" not in text, text[:300]
    for raw in (LINK, KEY, VALUE, METRIC):
        assert raw not in text, f"raw {raw!r} in {text[:300]}"


@pytest.mark.django_db
def test_the_compare_figures_escape_run_names_param_keys_values_and_metric_names(
    vic: User, project: Project, fake_mlflow: FakeMlflow
) -> None:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    ids = [
        fake_mlflow.add(
            make_run("a" * 32, "1", name=LINK, metrics={METRIC: [1.0, 0.5]}, params={KEY: VALUE, "seed": "1"})
        ).run_id,
        fake_mlflow.add(
            make_run("b" * 32, "1", name="plain", metrics={METRIC: [0.9, 0.4]}, params={KEY: "small", "seed": "2"})
        ).run_id,
    ]

    response = client_for(vic).get(
        reverse("tracking:compare"), {"run_ids": ",".join(ids), "pc": METRIC, "sx": KEY, "sy": METRIC}
    )

    assert response.status_code == 200
    charts = [chart["figure"] for chart in [json.loads(c.json) for c in response.context["charts"]]]
    parcoords, scatter = response.context["parcoords"], response.context["scatter"]
    assert charts and parcoords and scatter
    for figure in (charts, parcoords, scatter):
        _assert_inert(figure)
    # The text is there, escaped (Plotly shows it as typed), not dropped.
    assert "&lt;a href=" in _text_of(charts) and "click me" in _text_of(charts)
    assert "&lt;a href=" in _text_of(parcoords) and "&lt;b&gt;big&lt;/b&gt;" in _text_of(parcoords)
    assert "&lt;b&gt;big&lt;/b&gt;" in _text_of(scatter)
    # Names reach the hover label as data, never as part of the template.
    assert KEY not in scatter["data"][0]["hovertemplate"] and "lr" not in scatter["data"][0]["hovertemplate"]


def test_the_sweep_chart_escapes_parameter_names_values_and_the_metric() -> None:
    sweep = Sweep(space={KEY: [VALUE, "small"], "n": [1, 2]}, metric=METRIC, direction="max")
    trials = [
        Launch(pk=1, parameters={KEY: VALUE, "n": 1}),
        Launch(pk=2, parameters={KEY: "small", "n": 2}),
    ]
    figure = sweep_figure(sweep, trials, {1: {METRIC: 0.5}, 2: {METRIC: 0.7}})
    assert figure
    _assert_inert(figure)
    assert "&lt;b&gt;big&lt;/b&gt;" in _text_of(figure)


def test_the_gpu_charts_escape_gpu_labels_and_group_keys() -> None:
    hour = datetime(2026, 1, 1, tzinfo=UTC)
    _assert_inert(heatmap_figure([hour], [LINK], [[50.0]]))
    _assert_inert(usage_figure([UsageRow(key=LINK, team="t", project="p", allocated_hours=1.0)]))
    _assert_inert(launch_figure({"gpus": {LINK: {"t": [hour], "util": [10.0], "mem": [100.0]}}}))
    assert "&lt;a href=" in _text_of(usage_figure([UsageRow(key=LINK, team="t", project="p")]))


def test_the_promotion_evidence_chart_escapes_metric_names_and_the_alias() -> None:
    evidence = {
        "alias": LINK,
        "candidate": {"version": 2, "metrics": {METRIC: 0.9}},
        "holder": {"version": 1, "metrics": {METRIC: 0.8}},
    }
    figure = evidence_figure(evidence)
    assert figure
    _assert_inert(figure)
