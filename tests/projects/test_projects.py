"""Projects: defaults, quotas within the team budget, clear errors, and the MLflow link."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.core.errors import InvalidInput
from apps.projects import services
from apps.projects.models import ExperimentState, Project
from apps.projects.tasks import sync_pending_experiments
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


def test_a_lead_creates_a_project_with_the_default_namespace_and_experiment(
    lin: User, team: Team, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_for(lin).post(
            "/api/v1/projects/", {"team": "demo", "slug": "vision", "name": "Vision", "gpu_quota": 2}, format="json"
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["namespace"] == "plinth-demo-vision"
    assert body["mlflow_experiment"] == "demo/vision"
    assert body["backend"] == "local"
    assert body["mlflow_state"] == "pending"  # MLflow is down in this test: the project exists anyway
    assert len(callbacks) == 1  # the experiment task is queued after commit
    assert AuditEvent.objects.filter(verb="project.created", project_id=body["id"]).exists()


def test_a_duplicate_project_slug_in_the_team_is_a_400(lin: User, project: Project) -> None:
    response = api_for(lin).post("/api/v1/projects/", {"team": "demo", "slug": "demo", "name": "Again"}, format="json")
    assert response.status_code == 400
    assert "already has a project" in response.json()["slug"][0]


def test_the_same_slug_in_another_team_is_fine(root: User, project: Project, other_team: Team) -> None:
    response = api_for(root).post("/api/v1/projects/", {"team": "other", "slug": "demo", "name": "Demo"}, format="json")
    assert response.status_code == 201


def test_quota_beyond_the_team_budget_is_a_409_with_the_numbers(lin: User, project: Project) -> None:
    # team budget 8, the demo project holds 2 -> at most 6 more
    response = api_for(lin).post(
        "/api/v1/projects/", {"team": "demo", "slug": "big", "name": "Big", "gpu_quota": 7}, format="json"
    )
    assert response.status_code == 409
    assert "at most 6" in response.json()["detail"]
    assert not Project.objects.filter(slug="big").exists()


def test_a_lead_raises_a_quota_within_the_budget(lin: User, project: Project) -> None:
    response = api_for(lin).patch(f"/api/v1/projects/{project.pk}/", {"gpu_quota": 8}, format="json")
    assert response.status_code == 200
    assert response.json()["gpu_quota"] == 8
    response = api_for(lin).patch(f"/api/v1/projects/{project.pk}/", {"gpu_quota": 9}, format="json")
    assert response.status_code == 409
    project.refresh_from_db()
    assert project.gpu_quota == 8
    event = AuditEvent.objects.get(verb="project.updated")
    assert event.before is not None and event.after is not None
    assert (event.before["gpu_quota"], event.after["gpu_quota"]) == (2, 8)


def test_members_cannot_change_a_project(ada: User, project: Project) -> None:
    response = api_for(ada).patch(f"/api/v1/projects/{project.pk}/", {"gpu_quota": 1}, format="json")
    assert response.status_code == 403


def test_an_unknown_backend_is_a_400(lin: User, team: Team) -> None:
    response = api_for(lin).post(
        "/api/v1/projects/", {"team": "demo", "slug": "x", "name": "X", "backend": "slurm"}, format="json"
    )
    assert response.status_code == 400
    assert "backend" in response.json()


def test_a_namespace_that_would_be_too_long_asks_for_an_explicit_one(lin: User, root: User) -> None:
    long_team = Team.objects.create(slug="a" * 40, name="Long", gpu_budget=0)
    with pytest.raises(InvalidInput) as caught:
        services.create_project(root, long_team, slug="b" * 30, name="Long")
    assert "namespace" in caught.value.fields


def test_the_project_page_shows_quota_backend_and_experiment_and_no_namespace_on_local(
    vic: User, project: Project
) -> None:
    response = client_for(vic).get("/projects/demo/demo/")
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("demo/demo", "waiting for MLflow", "Local (worker host)"):
        assert text in page
    assert "plinth-demo-demo" not in page  # a Kubernetes namespace means nothing on the local backend
    assert "Edit name, quota or backend" not in page  # viewers cannot change it


def test_the_edit_form_shows_the_budget_error_inline(lin: User, project: Project) -> None:
    response = client_for(lin).post(
        "/projects/demo/demo/edit/", {"name": "Demo", "description": "", "gpu_quota": 99, "backend": "local"}
    )
    assert response.status_code == 409
    assert "at most 8" in response.content.decode()


def test_linking_waits_while_mlflow_is_down_and_the_reconciler_retries(project: Project) -> None:
    with pytest.raises(MlflowUnavailable):
        services.link_experiment(project.pk)
    assert sync_pending_experiments() == 0
    project.refresh_from_db()
    assert project.mlflow_state == ExperimentState.PENDING
    assert project.mlflow_attempts == 2


@pytest.mark.mlflow
def test_the_experiment_is_created_in_a_real_mlflow_once_it_answers(project: Project, mlflow_up: str) -> None:
    assert sync_pending_experiments() == 1
    project.refresh_from_db()
    assert project.mlflow_state == ExperimentState.LINKED
    experiment = MlflowGateway(mlflow_up).get_experiment_by_name("demo/demo")
    assert experiment is not None
    assert project.mlflow_experiment_id == experiment["experiment_id"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags["plinth.project"] == "demo"
    # idempotent: running again changes nothing and writes no second event
    services.link_experiment(project.pk)
    assert AuditEvent.objects.filter(verb="project.experiment_linked").count() == 1


@pytest.mark.mlflow
def test_an_existing_experiment_is_attached_not_duplicated_when_a_platform_admin_says_so(
    root: User, team: Team, mlflow_up: str
) -> None:
    existing_id = MlflowGateway(mlflow_up).create_experiment("shared/legacy-experiment")
    project = services.create_project(
        root, team, slug="legacy", name="Legacy", mlflow_experiment="shared/legacy-experiment", attach_existing=True
    )
    services.link_experiment(project.pk)
    project.refresh_from_db()
    assert (project.mlflow_state, project.mlflow_experiment_id) == (ExperimentState.LINKED, existing_id)


@pytest.mark.mlflow
def test_the_project_page_links_to_the_mlflow_experiment(vic: User, project: Project, mlflow_up: str) -> None:
    services.link_experiment(project.pk)
    project.refresh_from_db()
    response = client_for(vic).get("/projects/demo/demo/")
    assert f'{mlflow_up}/#/experiments/{project.mlflow_experiment_id}/runs"' in response.content.decode()
