"""What the compare page draws, with many runs (a FakeMlflow): every run is a trace, the
ones after the first 20 start hidden (legendonly), a run keeps its color on every chart,
and names people chose cannot break out of the page's JSON."""

from __future__ import annotations

import json
from html import escape

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from apps.tracking.charts import VISIBLE_TRACES
from tests.conftest import client_for
from tests.tracking.fakes import FakeMlflow, make_run

RUNS = 25
EVIL = "</script><script>alert('run name')</script>"


@pytest.fixture
def many_runs(project: Project, fake_mlflow: FakeMlflow) -> list[str]:
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    ids = []
    for i in range(RUNS):
        run = make_run(
            f"{i:032x}",
            "1",
            name=EVIL if i == 3 else f"run-{i:02d}",
            metrics={"loss": [1.0, 0.5 / (i + 1)], "accuracy": [0.5, 0.5 + i / 100]},
            params={"lr": str(i)},
        )
        ids.append(fake_mlflow.add(run).run_id)
    return ids


def test_traces_after_the_first_twenty_start_hidden_and_keep_their_color(vic: User, many_runs: list[str]) -> None:
    response = client_for(vic).get(reverse("tracking:compare"), {"run_ids": ",".join(many_runs)})
    assert response.status_code == 200
    charts = [json.loads(c.json) for c in response.context["charts"]]
    assert [c["key"] for c in charts] == ["accuracy", "loss"]
    for chart in charts:
        traces = chart["figure"]["data"]
        assert len(traces) == RUNS
        assert [t.get("visible", True) for t in traces] == [True] * VISIBLE_TRACES + ["legendonly"] * (
            RUNS - VISIBLE_TRACES
        )
    assert [t["line"]["color"] for t in charts[0]["figure"]["data"]] == [
        t["line"]["color"] for t in charts[1]["figure"]["data"]
    ]
    html = response.content.decode()
    assert "runs after the first 20 start hidden" in html


def test_a_run_name_cannot_break_out_of_the_page(vic: User, many_runs: list[str]) -> None:
    response = client_for(vic).get(reverse("tracking:compare"), {"run_ids": ",".join(many_runs[:5])})
    html = response.content.decode()
    assert "<script>alert(" not in html
    names = [t["name"] for t in json.loads(response.context["charts"][0].json)["figure"]["data"]]
    # Intact once parsed, escaped for Plotly (which draws "&lt;" as "<"), not mangled.
    assert escape(EVIL, quote=False) in names
