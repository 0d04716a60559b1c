"""Runs filters MLflow answers with a 500 (not its 400) are refused before they reach it,
against a real MLflow server: otherwise the caller's typo reads as "MLflow is down"."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.projects.models import Project
from apps.tracking.forms import MAX_CLAUSES
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.conftest import api_for
from tests.tracking.conftest import Seeded

pytestmark = pytest.mark.mlflow

RUNS_API = "/api/v1/runs/"
HUGE = "99999999999999999999"


def conditions(count: int) -> str:
    return " AND ".join(["params.alpha != 'nothing'"] * count)


@pytest.mark.parametrize("text", [f"attributes.start_time > {HUGE}", f"attributes.end_time = -{HUGE}", conditions(200)])
def test_mlflow_itself_fails_on_these_filters(linked: Project, text: str) -> None:
    with pytest.raises(MlflowUnavailable):
        MlflowGateway().search_runs([linked.mlflow_experiment_id], text)


@pytest.mark.parametrize(
    "text", [f"attributes.start_time > {HUGE}", f"attributes.end_time = -{HUGE}", conditions(MAX_CLAUSES + 1)]
)
def test_they_are_a_400_on_filter(vic: User, linked: Project, seeded: Seeded, text: str) -> None:
    response = api_for(vic).get(RUNS_API, {"project": "demo/demo", "filter": text})
    assert response.status_code == 400
    assert "filter" in response.json()


@pytest.mark.parametrize(
    "text",
    [
        conditions(MAX_CLAUSES),
        f"params.alpha != '{HUGE}'",  # quoted: text, not a number
        "metrics.loss < 1e999",
        "attributes.start_time > 9223372036854775807",
    ],
)
def test_filters_within_the_limits_reach_mlflow(vic: User, linked: Project, seeded: Seeded, text: str) -> None:
    response = api_for(vic).get(RUNS_API, {"project": "demo/demo", "filter": text})
    assert response.status_code == 200, response.content
