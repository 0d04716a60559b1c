"""NaN, ±inf and MLflow's ±1.797e308 sentinels, logged by an ordinary script into the real
MLflow server: every JSON answer stays strict JSON, pages show NaN/inf, "best" never goes
to a non-finite value, and the CSV tells a logged NaN from a metric never logged."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse
from mlflow import MlflowClient
from mlflow.entities import Metric

from apps.accounts.models import User
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.tracking.conftest import link, new_experiment

pytestmark = pytest.mark.mlflow

COMPARE_API = "/api/v1/runs/compare/"
RUNS_API = "/api/v1/runs/"


def strict(body: bytes) -> Any:
    """Parse as a strict JSON parser would: the NaN/Infinity tokens are refused."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(body, parse_constant=refuse)


@dataclass(frozen=True)
class Zoo:
    experiment_id: str
    runs: dict[str, str]  # name -> run id


def _run(client: MlflowClient, experiment_id: str, name: str, metrics: dict[str, list[float]]) -> str:
    now = int(time.time() * 1000)
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    points = [Metric(k, v, now + step, step) for k, values in metrics.items() for step, v in enumerate(values)]
    client.log_batch(run_id, metrics=points)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def zoo(mlflow_server: str) -> Zoo:
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = new_experiment(client, "nonfinite")
    nan, inf = float("nan"), float("inf")
    runs = {
        # A finite run: the one that should win both metrics.
        "fine": _run(client, experiment_id, "fine", {"loss": [0.9, 0.3], "accuracy": [0.8]}),
        # +inf accuracy (MLflow stores 1.797e308) would win "max"; -inf loss would win "min".
        "blown": _run(client, experiment_id, "blown", {"loss": [0.7, -inf], "accuracy": [inf]}),
        # NaN everywhere: never best, "NaN" in tables and CSV.
        "diverged": _run(client, experiment_id, "diverged", {"loss": [0.5, nan], "accuracy": [nan]}),
        # accuracy only: loss was never logged.
        "noloss": _run(client, experiment_id, "noloss", {"accuracy": [0.7]}),
    }
    return Zoo(experiment_id, runs)


@pytest.fixture
def linked(project: Project, zoo: Zoo, mlflow_up: str) -> Project:
    return link(project, zoo.experiment_id)


def ids(zoo: Zoo, *names: str) -> str:
    return ",".join(zoo.runs[name] for name in names)


def test_the_compare_api_is_strict_json_and_inf_or_nan_never_wins_best(vic: User, linked: Project, zoo: Zoo) -> None:
    response = api_for(vic).get(COMPARE_API, {"run_ids": ids(zoo, "blown", "diverged", "fine", "noloss")})
    assert response.status_code == 200
    body = strict(response.content)
    assert body["best"]["accuracy"]["run_id"] == zoo.runs["fine"]
    assert body["best"]["accuracy"]["value"] == pytest.approx(0.8)
    assert body["best"]["loss"]["run_id"] == zoo.runs["fine"]
    runs = {run["name"]: run for run in body["runs"]}
    # MLflow's sentinel comes back as the infinity it stands for, spelled as JSON allows.
    assert runs["blown"]["metrics"] == {"loss": "-Infinity", "accuracy": "Infinity"}
    assert runs["blown"]["summary"]["accuracy"]["last"] == "Infinity"
    assert runs["diverged"]["metrics"] == {"loss": "NaN", "accuracy": "NaN"}
    assert runs["diverged"]["summary"]["loss"]["last"] == "NaN"
    assert "loss" not in runs["noloss"]["metrics"]


def test_a_metric_with_no_finite_value_has_no_best(vic: User, linked: Project, zoo: Zoo) -> None:
    response = api_for(vic).get(COMPARE_API, {"run_ids": ids(zoo, "blown", "diverged")})
    assert response.status_code == 200
    body = strict(response.content)
    # Latest values: accuracy inf and NaN, loss -inf and NaN: nothing to call best.
    assert body["best"] == {}
    assert body["metrics"] == ["accuracy", "loss"]


def test_the_runs_api_is_strict_json(vic: User, linked: Project, zoo: Zoo) -> None:
    response = api_for(vic).get(RUNS_API, {"project": "demo/demo"})
    assert response.status_code == 200
    runs = {run["name"]: run for run in strict(response.content)["runs"]}
    assert runs["blown"]["metrics"]["accuracy"] == "Infinity"
    assert runs["diverged"]["metrics"]["accuracy"] == "NaN"
    assert runs["fine"]["metrics"]["accuracy"] == pytest.approx(0.8)


def test_the_compare_page_shows_nan_and_inf_and_highlights_the_finite_best(
    vic: User, linked: Project, zoo: Zoo
) -> None:
    response = client_for(vic).get(reverse("tracking:compare"), {"run_ids": ids(zoo, "blown", "diverged", "fine")})
    assert response.status_code == 200
    html = response.content.decode()
    assert "1.79769e+308" not in html and "1.7976931348623157e+308" not in html
    cells = {
        (run.name, key): (summary["last"], b is not None and b.run_id == run.run_id)
        for run, _, row in response.context["rows"]
        for key, summary, b in row
        if summary is not None
    }
    assert cells[("blown", "accuracy")][1] is False and cells[("fine", "accuracy")][1] is True
    assert cells[("diverged", "loss")][1] is False and cells[("fine", "loss")][1] is True
    assert '<td class="num">inf</td>' in html or ">inf<" in html
    assert ">NaN<" in html and ">-inf<" in html


def test_the_run_page_shows_inf_not_the_sentinel(vic: User, linked: Project, zoo: Zoo) -> None:
    url = reverse("tracking:run", kwargs={"team": "demo", "slug": "demo", "run_id": zoo.runs["blown"]})
    response = client_for(vic).get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "1.79769e+308" not in html
    assert '<td class="num">inf</td>' in html and '<td class="num">-inf</td>' in html


def test_the_runs_table_shows_nan_and_inf(vic: User, linked: Project, zoo: Zoo) -> None:
    url = reverse("tracking:runs", kwargs={"team": "demo", "slug": "demo"})
    response = client_for(vic).get(url, {"metrics": ["accuracy", "loss"]})
    assert response.status_code == 200
    html = response.content.decode()
    assert "1.79769e+308" not in html
    assert '<td class="num">inf</td>' in html and '<td class="num">NaN</td>' in html


def test_the_csv_tells_nan_from_never_logged(vic: User, linked: Project, zoo: Zoo) -> None:
    exported = client_for(vic).get(
        reverse("tracking:compare"), {"run_ids": ids(zoo, "blown", "diverged", "fine", "noloss"), "format": "csv"}
    )
    assert exported.status_code == 200
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(exported.content.decode()))}
    assert rows["diverged"]["metrics.loss"] == "NaN"
    assert rows["noloss"]["metrics.loss"] == ""
    assert (rows["blown"]["metrics.accuracy"], rows["blown"]["metrics.loss"]) == ("inf", "-inf")
    assert float(rows["fine"]["metrics.loss"]) == pytest.approx(0.3)
    # Spreadsheets and pandas read them back as the floats they are.
    assert math.isnan(float(rows["diverged"]["metrics.loss"])) and float(rows["blown"]["metrics.accuracy"]) == math.inf


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # MLflow alone would list "blown" (+inf accuracy, -inf loss) first in these two.
        ("metrics.accuracy DESC", ["fine", "noloss", "blown", "diverged"]),
        ("metrics.loss ASC", ["fine", "blown", "diverged", "noloss"]),
    ],
)
def test_sorting_by_a_metric_never_ranks_non_finite_values_first(
    vic: User, linked: Project, order_by: str, expected: list[str]
) -> None:
    api = api_for(vic)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        response = api.get(
            RUNS_API, {"project": "demo/demo", "order_by": order_by, "max_results": "1", "page_token": token}
        )
        assert response.status_code == 200, response.content
        body = strict(response.content)
        seen += [run["name"] for run in body["runs"]]
        token = body["next_page_token"]
        if not token:
            break
    assert seen == expected
    page = client_for(vic).get(
        reverse("tracking:runs", kwargs={"team": "demo", "slug": "demo"}), {"order_by": order_by}
    )
    assert [row[0].name for row in page.context["rows"]] == expected
