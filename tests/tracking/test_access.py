"""Who sees which runs, beyond the matrix (which builds URLs without a query string): the
compare page and API with run ids, MLflow down on every route (a banner or a 503, never a
500). MLflow is a FakeMlflow here, or down."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.accounts.models import User
from apps.projects.models import ExperimentState, Project
from tests.conftest import api_for, client_for
from tests.tracking.fakes import FakeMlflow, make_run

MINE = "a" * 32
THEIRS = "b" * 32
COMPARE_API = "/api/v1/runs/compare/"


@pytest.fixture
def two_teams(project: Project, other_project: Project, fake_mlflow: FakeMlflow) -> FakeMlflow:
    for each, experiment in ((project, "1"), (other_project, "2")):
        Project.objects.filter(pk=each.pk).update(mlflow_experiment_id=experiment, mlflow_state=ExperimentState.LINKED)
    fake_mlflow.add(make_run(MINE, "1", name="mine", metrics={"loss": [1.0, 0.5]}))
    fake_mlflow.add(make_run(THEIRS, "2", name="theirs", metrics={"loss": [2.0, 1.0]}))
    return fake_mlflow


@pytest.mark.parametrize(("who", "ids", "status"), [
    ("vic", MINE, 200),
    ("vic", THEIRS, 404),
    ("vic", f"{MINE},{THEIRS}", 404),
    ("omar", MINE, 404),
    ("omar", THEIRS, 200),
    ("root", f"{MINE},{THEIRS}", 200),
])  # fmt: skip
def test_compare_shows_only_runs_of_projects_one_can_see(
    people: dict[str, User], two_teams: FakeMlflow, who: str, ids: str, status: int
) -> None:
    user = people[who]
    assert api_for(user).get(COMPARE_API, {"run_ids": ids}).status_code == status
    assert client_for(user).get(reverse("tracking:compare"), {"run_ids": ids}).status_code == status


def test_an_unknown_run_and_someone_elses_look_the_same(people: dict[str, User], two_teams: FakeMlflow) -> None:
    api = api_for(people["vic"])
    unknown = api.get(COMPARE_API, {"run_ids": "c" * 32})
    other = api.get(COMPARE_API, {"run_ids": THEIRS})
    assert (unknown.status_code, other.status_code) == (404, 404)
    assert unknown.json()["detail"].replace("c" * 32, "X") == other.json()["detail"].replace(THEIRS, "X")


def test_a_project_without_experiment_hides_nothing_it_does_not_have(
    people: dict[str, User], project: Project, fake_mlflow: FakeMlflow
) -> None:
    fake_mlflow.add(make_run(MINE, "1", metrics={"loss": [1.0]}))  # experiment "1", linked to no project
    assert api_for(people["root"]).get(COMPARE_API, {"run_ids": MINE}).status_code == 404


@pytest.fixture
def linked_but_down(project: Project) -> Project:
    """demo/demo linked to experiment "1" while MLflow is down (the tests' default)."""
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    project.refresh_from_db()
    return project


def test_mlflow_down_is_a_503_from_the_api(vic: User, linked_but_down: Project) -> None:
    for url, query in (("/api/v1/runs/", {"project": "demo/demo"}), (COMPARE_API, {"run_ids": MINE})):
        response = api_for(vic).get(url, query)
        assert response.status_code == 503
        assert "MLflow" in response.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/runs/demo/demo/",
        f"/runs/demo/demo/{MINE}/",
        f"/runs/compare/?run_ids={MINE}",
        f"/runs/compare/?run_ids={MINE}&format=csv",
    ],
)
def test_mlflow_down_is_a_banner_on_the_pages(vic: User, linked_but_down: Project, url: str) -> None:
    response = client_for(vic).get(url)
    assert response.status_code == 503
    html = response.content.decode()
    assert 'class="banner" role="alert"' in html and "MLflow is unreachable" in html


def test_mlflow_down_still_hides_other_teams_projects(omar: User, linked_but_down: Project) -> None:
    assert client_for(omar).get("/runs/demo/demo/").status_code == 404
    assert client_for(omar).get(f"/runs/demo/demo/{MINE}/").status_code == 404
    assert api_for(omar).get("/api/v1/runs/", {"project": "demo/demo"}).status_code == 404
