"""Page tokens of the runs table, against a real MLflow server: only tokens of the shape
MLflow hands out reach it. A token that decodes to something else used to reach MLflow,
which answered 500 — shown as "MLflow is unreachable" (503) although MLflow was fine."""

from __future__ import annotations

import base64
import json

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.conftest import api_for, client_for
from tests.tracking.conftest import Seeded

pytestmark = pytest.mark.mlflow

RUNS_API = "/api/v1/runs/"


def token_of(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


BAD_TOKENS = [
    "W10=",  # base64 of [] — MLflow: 500
    token_of({"offset": 99999999999999999999}),  # past any SQL integer — MLflow: 500
    token_of({"offset": 2**31}),
    token_of({"offset": 0}),
    token_of({"offset": -5}),
    token_of({"offset": True}),
    token_of({"offset": "5"}),
    token_of({"offset": 5, "more": 1}),
    token_of("offset"),
    "not base64!",
    "e30",  # unpadded
    "A" * 400,
]


def test_mlflow_itself_fails_on_a_token_of_the_wrong_shape(linked: Project) -> None:
    """Why the portal checks tokens itself: MLflow answers these with a 500."""
    with pytest.raises(MlflowUnavailable):
        MlflowGateway().search_runs([linked.mlflow_experiment_id], page_token="W10=")


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_a_token_mlflow_never_issued_is_a_400_on_page_token(
    vic: User, linked: Project, seeded: Seeded, token: str
) -> None:
    response = api_for(vic).get(RUNS_API, {"project": "demo/demo", "page_token": token})
    assert response.status_code == 400
    assert "page_token" in response.json()


@pytest.mark.parametrize("token", ["W10=", token_of({"offset": 99999999999999999999})])
def test_the_runs_page_says_the_token_is_wrong_not_that_mlflow_is_down(
    vic: User, linked: Project, seeded: Seeded, token: str
) -> None:
    page = client_for(vic).get(reverse("tracking:runs", kwargs={"team": "demo", "slug": "demo"}), {"page_token": token})
    assert page.status_code == 400
    assert not page.context["mlflow_down"]
    assert "page token" in page.context["error"]


def test_a_token_of_mlflows_shape_past_the_last_run_is_an_empty_page(
    vic: User, linked: Project, seeded: Seeded
) -> None:
    body = api_for(vic).get(RUNS_API, {"project": "demo/demo", "page_token": token_of({"offset": 500})}).json()
    assert body == {"runs": [], "next_page_token": ""}
