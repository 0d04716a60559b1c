"""The project<->experiment link is checked by id against the real MLflow server: an
experiment deleted outside Plinth makes the project `deleted` (reconciler, or MLflow refusing
a run), every page says so with the ways out, a launch or sweep answers 409 with that
sentence before any MLflow run exists, restoring (in Plinth or in MLflow) links it again,
a lead can give the project a new experiment, and a rename shows by id."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import reverse
from mlflow import MlflowClient
from mlflow.entities import ViewType

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.launches.models import Launch, Sweep
from apps.projects import services
from apps.projects.models import ExperimentState, Project
from apps.projects.tasks import sync_pending_experiments
from tests.conftest import api_for, client_for
from tests.launches.conftest import make_template

pytestmark = [pytest.mark.django_db, pytest.mark.mlflow]


@pytest.fixture
def linked(lin: User, team: Team, mlflow_up: str) -> Project:
    """A project of team demo linked to an experiment Plinth created in the real MLflow."""
    slug = f"p-{uuid.uuid4().hex[:8]}"
    project = services.create_project(lin, team, slug=slug, name="State", gpu_quota=0)
    done = services.link_experiment(project.pk)
    assert done is not None and done.mlflow_state == ExperimentState.LINKED
    return done


@pytest.fixture
def mlflow(mlflow_up: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_up)


def runs_of(mlflow: MlflowClient, experiment_id: str) -> int:
    return len(mlflow.search_runs([experiment_id], run_view_type=ViewType.ALL))


def detail_url(project: Project) -> str:
    return reverse("projects:detail", args=[project.team.slug, project.slug])


def reload(project: Project) -> Project:
    return Project.objects.get(pk=project.pk)


def test_the_reconciler_marks_a_deleted_experiment_and_every_page_says_how_to_fix_it(
    linked: Project, mlflow: MlflowClient, ada: User, lin: User, vic: User
) -> None:
    mlflow.delete_experiment(linked.mlflow_experiment_id)

    sync_pending_experiments()

    project = reload(linked)
    assert project.mlflow_state == ExperimentState.DELETED
    assert "deleted in MLflow" in project.mlflow_error and project.mlflow_state_since is not None
    assert AuditEvent.objects.filter(verb="project.experiment_deleted", project_id=project.pk).count() == 1
    sentence = services.experiment_deleted_sentence(project)
    assert f'restore_experiment("{project.mlflow_experiment_id}")' in sentence

    page = client_for(ada).get(detail_url(project)).content.decode()
    assert "This project's MLflow experiment is deleted." in page
    assert reverse("projects:restore-experiment", args=[project.team.slug, project.slug]) in page
    assert reverse("projects:replace-experiment", args=[project.team.slug, project.slug]) not in page  # a lead's
    assert "open in MLflow" not in page
    lead_page = client_for(lin).get(detail_url(project)).content.decode()
    assert reverse("projects:replace-experiment", args=[project.team.slug, project.slug]) in lead_page
    viewer_page = client_for(vic).get(detail_url(project)).content.decode()
    assert "This project's MLflow experiment is deleted." in viewer_page
    assert reverse("projects:restore-experiment", args=[project.team.slug, project.slug]) not in viewer_page

    runs = client_for(ada).get(reverse("tracking:runs", args=[project.team.slug, project.slug])).content.decode()
    assert "This project's MLflow experiment is deleted." in runs
    assert "Restore experiment" in runs
    assert "log from your own script" not in runs and "set_experiment" not in runs

    template = make_template(project.team, "train", ["python", "train.py"], backends=["local"])
    form = client_for(ada).get(reverse("launches:create") + f"?template={template.pk}").content.decode()
    assert f"{project.full_slug}: its MLflow experiment is deleted." in form


def test_a_launch_on_a_deleted_experiment_answers_409_with_the_sentence_and_creates_no_run(
    linked: Project, mlflow: MlflowClient, ada: User
) -> None:
    make_template(linked.team, "train", ["python", "train.py"], backends=["local"])
    mlflow.delete_experiment(linked.mlflow_experiment_id)  # the reconciler has not run yet

    response = api_for(ada).post("/api/v1/launches/", {"project": linked.full_slug, "template": "train"}, format="json")

    assert response.status_code == 409, response.json()
    detail = response.json()["detail"]
    assert "was deleted in MLflow" in detail and "must be in the 'active' state" not in detail
    assert runs_of(mlflow, linked.mlflow_experiment_id) == 0
    assert not Launch.objects.exists()
    assert reload(linked).mlflow_state == ExperimentState.DELETED  # what MLflow said is recorded

    again = api_for(ada).post("/api/v1/launches/", {"project": linked.full_slug, "template": "train"}, format="json")
    assert again.status_code == 409 and again.json()["detail"] == detail  # now refused before MLflow
    assert runs_of(mlflow, linked.mlflow_experiment_id) == 0


def test_a_sweep_on_a_deleted_experiment_answers_409_and_creates_no_parent_run(
    linked: Project, mlflow: MlflowClient, ada: User
) -> None:
    make_template(
        linked.team,
        "train",
        ["python", "train.py"],
        backends=["local"],
        parameters={"epochs": {"type": "int", "default": 3, "min": 1, "max": 50}},
    )
    mlflow.delete_experiment(linked.mlflow_experiment_id)
    body: dict[str, Any] = {
        "project": linked.full_slug,
        "template": "train",
        "strategy": "grid",
        "space": {"epochs": [1, 2]},
        "max_trials": 2,
        "parallelism": 1,
    }

    response = api_for(ada).post("/api/v1/sweeps/", body, format="json")

    assert response.status_code == 409, response.json()
    assert "was deleted in MLflow" in response.json()["detail"]
    assert runs_of(mlflow, linked.mlflow_experiment_id) == 0
    assert not Sweep.objects.exists()
    assert reload(linked).mlflow_state == ExperimentState.DELETED


def test_a_member_restores_the_experiment_and_the_project_is_linked_again(
    linked: Project, mlflow: MlflowClient, ada: User, vic: User
) -> None:
    mlflow.delete_experiment(linked.mlflow_experiment_id)
    sync_pending_experiments()
    url = reverse("projects:restore-experiment", args=[linked.team.slug, linked.slug])

    assert client_for(vic).post(url).status_code == 403
    assert mlflow.get_experiment(linked.mlflow_experiment_id).lifecycle_stage == "deleted"

    response = client_for(ada).post(url)

    assert response.status_code == 302
    assert mlflow.get_experiment(linked.mlflow_experiment_id).lifecycle_stage == "active"
    project = reload(linked)
    assert project.mlflow_state == ExperimentState.LINKED and project.mlflow_error == ""
    event = AuditEvent.objects.get(verb="project.experiment_restored", project_id=project.pk)
    assert event.actor == ada
    assert client_for(ada).post(url).status_code == 409  # nothing left to restore


def test_restored_in_mlflow_the_reconciler_links_it_again(linked: Project, mlflow: MlflowClient) -> None:
    mlflow.delete_experiment(linked.mlflow_experiment_id)
    sync_pending_experiments()
    assert reload(linked).mlflow_state == ExperimentState.DELETED

    mlflow.restore_experiment(linked.mlflow_experiment_id)
    sync_pending_experiments()

    assert reload(linked).mlflow_state == ExperimentState.LINKED
    assert AuditEvent.objects.filter(verb="project.experiment_restored", project_id=linked.pk, actor=None).exists()


def test_a_lead_gives_the_project_a_new_experiment(linked: Project, mlflow: MlflowClient, ada: User, lin: User) -> None:
    old_id = linked.mlflow_experiment_id
    mlflow.delete_experiment(old_id)
    sync_pending_experiments()
    url = reverse("projects:replace-experiment", args=[linked.team.slug, linked.slug])

    assert client_for(ada).post(url, {"name": ""}).status_code == 403

    response = client_for(lin).post(url, {"name": ""})

    assert response.status_code == 302
    project = reload(linked)
    assert project.mlflow_state == ExperimentState.LINKED and project.mlflow_experiment_id != old_id
    assert project.mlflow_experiment_name == f"{linked.team.slug}/{linked.slug}-2"
    created = mlflow.get_experiment(project.mlflow_experiment_id)
    assert created.lifecycle_stage == "active" and created.tags["plinth.project"] == linked.slug
    event = AuditEvent.objects.get(verb="project.experiment_replaced", project_id=project.pk)
    assert event.actor == lin and (event.before or {}).get("mlflow_experiment_id") == old_id

    taken = client_for(lin).post(url, {"name": project.mlflow_experiment_name})
    assert taken.status_code == 409  # it is not deleted any more


def test_a_page_sees_a_deletion_before_the_reconciler_does(linked: Project, mlflow: MlflowClient, ada: User) -> None:
    mlflow.delete_experiment(linked.mlflow_experiment_id)

    page = client_for(ada).get(detail_url(linked)).content.decode()

    assert "This project's MLflow experiment is deleted." in page
    assert reload(linked).mlflow_state == ExperimentState.LINKED  # a GET changes nothing


def test_a_rename_in_mlflow_shows_at_once_and_is_recorded_by_id(
    linked: Project, mlflow: MlflowClient, ada: User
) -> None:
    new_name = f"renamed-{uuid.uuid4().hex[:8]}"
    mlflow.rename_experiment(linked.mlflow_experiment_id, new_name)

    assert new_name in client_for(ada).get(detail_url(linked)).content.decode()

    sync_pending_experiments()

    project = reload(linked)
    assert project.mlflow_experiment_name == new_name and project.mlflow_state == ExperimentState.LINKED
    assert AuditEvent.objects.filter(verb="project.experiment_renamed", project_id=project.pk).exists()
