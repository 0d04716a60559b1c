"""Compare, page and API, against a real MLflow server: what MLflow holds is what the
portal shows, histories included (downsampled only when longer than max_points)."""

from __future__ import annotations

import csv
import io
import json
import math
import time

import pytest
from django.urls import reverse
from mlflow import MlflowClient
from mlflow.entities import Metric

from apps.accounts.models import User
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for, client_for
from tests.tracking.conftest import Seeded, link, log_run, new_experiment, series_of

pytestmark = pytest.mark.mlflow

COMPARE_API = "/api/v1/runs/compare/"


def history(seeded: Seeded, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(seeded.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in points], [m.value for m in points]


def test_compare_answers_params_summaries_and_every_history_as_mlflow_holds_it(
    vic: User, linked: Project, seeded: Seeded
) -> None:
    ids = [seeded.run_id(i) for i in (4, 0, 9)]
    response = api_for(vic).get(COMPARE_API, {"run_ids": ",".join(ids)})
    assert response.status_code == 200
    body = response.json()
    assert [run["run_id"] for run in body["runs"]] == ids
    assert body["metrics"] == ["accuracy", "loss"] and body["max_points"] == 1000
    assert body["missing"] == []
    for run_id in ids:
        for key in ("loss", "accuracy"):
            assert series_of(body, key, run_id) == history(seeded, run_id, key)
    run4 = body["runs"][0]
    assert run4["params"] == {"lr": "0.01", "optimizer": "adam", "depth": "4"}
    loss = history(seeded, ids[0], "loss")[1]
    assert run4["summary"]["loss"] == {"last": loss[-1], "min": min(loss), "max": max(loss), "points": 30}
    assert body["best"]["loss"] == {
        "run_id": seeded.run_id(0),
        "value": pytest.approx(1 / 30, rel=1e-4),
        "direction": "min",
    }
    assert body["best"]["accuracy"]["run_id"] == seeded.run_id(9)
    assert body["best"]["accuracy"]["direction"] == "max"


def test_the_best_direction_can_be_switched_and_metrics_chosen(vic: User, linked: Project, seeded: Seeded) -> None:
    ids = ",".join(seeded.run_id(i) for i in (1, 2, 3))
    body = api_for(vic).get(COMPARE_API, {"run_ids": ids, "metrics": "loss", "dir": "loss:max"}).json()
    assert body["metrics"] == ["loss"] and list(body["series"]) == ["loss"]
    assert body["best"]["loss"]["run_id"] == seeded.run_id(3)
    assert body["best"]["loss"]["direction"] == "max"


def test_a_long_history_is_downsampled_keeping_first_last_and_the_spikes(
    vic: User, project: Project, mlflow_client: MlflowClient, mlflow_up: str
) -> None:
    client = mlflow_client
    experiment = new_experiment(client, "spiky")
    link(project, experiment)
    run_id = client.create_run(experiment, run_name="spiky").info.run_id
    now = int(time.time() * 1000)
    values = [math.sin(step / 40) for step in range(6000)]
    values[3333], values[4444] = 50.0, -50.0  # a one-step spike and a one-step dip
    for start in range(0, 6000, 1000):
        batch = [Metric("loss", values[s], now + s, s) for s in range(start, start + 1000)]
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    body = api_for(vic).get(COMPARE_API, {"run_ids": run_id, "max_points": 200}).json()
    steps, kept = series_of(body, "loss", run_id)
    assert len(steps) <= 200 and steps == sorted(steps)
    assert steps[0] == 0 and steps[-1] == 5999
    assert (3333, 50.0) in zip(steps, kept, strict=True) and (4444, -50.0) in zip(steps, kept, strict=True)
    summary = body["runs"][0]["summary"]["loss"]
    assert (summary["min"], summary["max"], summary["points"]) == (-50.0, 50.0, 6000)


def test_the_compare_page_shows_tables_charts_and_exports_csv(vic: User, linked: Project, seeded: Seeded) -> None:
    ids = [seeded.run_id(i) for i in (0, 3, 6)]
    url = reverse("tracking:compare")
    response = client_for(vic).get(url, {"run_ids": ",".join(ids)})
    assert response.status_code == 200
    html = response.content.decode()
    charts = [json.loads(c.json) for c in response.context["charts"]]
    assert [c["key"] for c in charts] == ["accuracy", "loss"]
    loss_chart = charts[1]["figure"]
    assert [trace["name"] for trace in loss_chart["data"]] == ["run-00", "run-03", "run-06"]
    assert loss_chart["data"][1]["y"] == history(seeded, ids[1], "loss")[1]
    assert 'id="chart-1"' in html and 'data-chart="chart-1-data"' in html and "vendor/plotly-strict.min" in html
    # Params side by side; "only differences" hides the rows marked the same (lr here).
    same = {key: is_same for key, _, is_same in response.context["params_rows"]}
    assert same == {"depth": False, "lr": True, "optimizer": False}
    assert '<tr data-same="1"><th scope="row">lr</th>' in html
    assert "data-only-differences" in html
    rows = response.context["rows"]
    best_cells = [(run.name, key) for run, _, cells in rows for key, _, b in cells if b and b.run_id == run.run_id]
    assert sorted(best_cells) == [("run-00", "loss"), ("run-06", "accuracy")]
    assert response.context["parcoords"] is not None and response.context["scatter"] is not None

    exported = client_for(vic).get(url, {"run_ids": ",".join(ids), "format": "csv"})
    assert exported["Content-Type"].startswith("text/csv")
    exported_rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert [r["name"] for r in exported_rows] == ["run-00", "run-03", "run-06"]
    assert exported_rows[1]["params.optimizer"] == "sgd"
    assert float(exported_rows[2]["metrics.accuracy"]) == pytest.approx(0.68)


def test_the_analysis_part_redraws_for_another_metric_without_reading_histories(
    vic: User, linked: Project, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis part read a history")

    monkeypatch.setattr(MlflowGateway, "get_history_bulk", refuse)
    ids = ",".join(seeded.run_id(i) for i in range(5))
    response = client_for(vic).get(
        reverse("tracking:compare"),
        {"run_ids": ids, "pc": "accuracy", "sx": "lr", "sy": "loss"},
        headers={"HX-Request": "true", "HX-Target": "analysis"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="analysis">')
    for name, value in (("pc", "accuracy"), ("sx", "lr"), ("sy", "loss")):
        chosen = html.split(f'name="{name}"', 1)[1].split("</select>", 1)[0]
        assert f'<option value="{value}" selected>{value}</option>' in chosen
    assert "parcoords-data" in html and "scatter-data" in html


def test_a_deleted_run_is_left_out_and_named_without_breaking_the_comparison(
    vic: User, linked: Project, seeded: Seeded
) -> None:
    doomed = log_run(seeded.client, seeded.experiment_id, 40)
    seeded.client.delete_run(doomed)
    ids = f"{seeded.run_id(0)},{doomed}"
    body = api_for(vic).get(COMPARE_API, {"run_ids": ids}).json()
    assert [run["run_id"] for run in body["runs"]] == [seeded.run_id(0)]
    assert body["missing"] == [{"run_id": doomed, "reason": "deleted"}]
    page = client_for(vic).get(reverse("tracking:compare"), {"run_ids": ids})
    assert page.status_code == 200
    assert doomed in page.content.decode() and "it is left out" in page.content.decode()


def test_a_run_of_another_teams_project_is_a_404_to_outsiders(
    vic: User, omar: User, root: User, linked: Project, other_project: Project, seeded: Seeded
) -> None:
    experiment = new_experiment(seeded.client, "other-team")
    link(other_project, experiment)
    theirs = log_run(seeded.client, experiment, 50)
    mine = seeded.run_id(0)
    for ids in (theirs, f"{mine},{theirs}"):
        assert api_for(vic).get(COMPARE_API, {"run_ids": ids}).status_code == 404
        assert client_for(vic).get(reverse("tracking:compare"), {"run_ids": ids}).status_code == 404
    assert api_for(omar).get(COMPARE_API, {"run_ids": mine}).status_code == 404
    assert api_for(omar).get(COMPARE_API, {"run_ids": theirs}).status_code == 200
    both = api_for(root).get(COMPARE_API, {"run_ids": f"{mine},{theirs}"}).json()
    assert [run["project"] for run in both["runs"]] == ["demo/demo", "other/other"]
    unknown = "0" * 32  # no such run: the same 404 as someone else's
    assert api_for(vic).get(COMPARE_API, {"run_ids": unknown}).json() == {"detail": f"No such run: {unknown}."}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "run_ids"),
        ({"run_ids": "not a run id"}, "run_ids"),
        ({"run_ids": "abc", "max_points": "2"}, "max_points"),
        ({"run_ids": "abc", "max_points": "lots"}, "max_points"),
        ({"run_ids": "abc", "dir": "loss:sideways"}, "dir"),
    ],
)
def test_bad_compare_input_is_a_400_naming_the_field(vic: User, query: dict[str, str], field: str) -> None:
    response = api_for(vic).get(COMPARE_API, query)
    assert response.status_code == 400
    assert field in response.json()
