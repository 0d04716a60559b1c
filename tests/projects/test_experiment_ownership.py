"""A project reaches MLflow only through its own experiment, by id: a lead cannot attach
another team's experiment (linked, renamed, or created straight in MLflow), neither when
creating the project nor when the link task runs later; a platform admin can, audited."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError
from mlflow import MlflowClient

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.projects import services
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _linked_project_of(team: Team, lead: User) -> Project:
    """A project of `team` whose experiment Plinth created and linked (a real MLflow)."""
    project = services.create_project(lead, team, slug=_unique("p"), name="Theirs")
    linked = services.link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED
    return linked


def test_two_projects_cannot_hold_one_experiment_id(project: Project, other_project: Project) -> None:
    Project.objects.filter(pk=other_project.pk).update(mlflow_experiment_id="42")
    with pytest.raises(IntegrityError):
        Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="42")


def test_a_lead_cannot_ask_to_attach_an_existing_experiment(lin: User, team: Team) -> None:
    response = api_for(lin).post(
        "/api/v1/projects/",
        {"team": "demo", "slug": "grab", "name": "Grab", "mlflow_experiment": "x/y", "attach_existing": True},
        format="json",
    )
    assert response.status_code == 403, response.json()
    assert "platform admins" in response.json()["detail"]
    assert not Project.objects.filter(slug="grab").exists()


@pytest.mark.mlflow
def test_a_lead_cannot_attach_an_experiment_created_outside_plinth(lin: User, team: Team, mlflow_up: str) -> None:
    name = _unique("made-in-mlflow")
    MlflowGateway(mlflow_up).create_experiment(name)
    response = api_for(lin).post(
        "/api/v1/projects/",
        {"team": "demo", "slug": "grab", "name": "Grab", "mlflow_experiment": name},
        format="json",
    )
    assert response.status_code == 409, response.json()
    assert "ask a platform admin" in response.json()["mlflow_experiment"][0]
    assert not Project.objects.filter(slug="grab").exists()


@pytest.mark.mlflow
def test_a_lead_cannot_attach_another_teams_experiment_after_it_was_renamed(
    lin: User, omar: User, team: Team, other_team: Team, mlflow_up: str
) -> None:
    from apps.access.roles import Role
    from apps.accounts.models import Membership

    Membership.objects.filter(user=omar, team=other_team).update(role=Role.LEAD)
    theirs = _linked_project_of(other_team, omar)
    new_name = _unique("renamed")
    MlflowClient(tracking_uri=mlflow_up).rename_experiment(theirs.mlflow_experiment_id, new_name)

    response = api_for(lin).post(
        "/api/v1/projects/",
        {"team": "demo", "slug": "grab", "name": "Grab", "mlflow_experiment": new_name},
        format="json",
    )
    assert response.status_code == 409, response.json()
    assert "belongs to another Plinth project" in response.json()["mlflow_experiment"][0]
    assert not Project.objects.filter(slug="grab").exists()


@pytest.mark.mlflow
def test_the_link_task_refuses_an_experiment_that_appeared_after_the_project_was_created(
    lin: User, vic: User, team: Team, settings: object, mlflow_up: str
) -> None:
    # MLflow was down while the project was created (the check could not run then) ...
    name = _unique("late")
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # type: ignore[attr-defined]
    project = services.create_project(lin, team, slug="late", name="Late", mlflow_experiment=name)
    settings.MLFLOW_TRACKING_URI = mlflow_up  # type: ignore[attr-defined]
    # ... and someone created an experiment of that name straight in MLflow meanwhile.
    foreign_id = MlflowGateway(mlflow_up).create_experiment(name)

    linked = services.link_experiment(project.pk)

    assert linked is not None
    assert (linked.mlflow_state, linked.mlflow_experiment_id) == (ExperimentState.REFUSED, "")
    assert "ask a platform admin" in linked.mlflow_error
    assert AuditEvent.objects.filter(verb="project.experiment_refused", project_id=project.pk).count() == 1
    assert not AuditEvent.objects.filter(verb="project.experiment_linked", project_id=project.pk).exists()
    # The team sees the refusal, not someone else's runs.
    page = client_for(vic).get("/projects/demo/late/").content.decode()
    assert "Not linked" in page and "ask a platform admin" in page
    runs = api_for(vic).get("/api/v1/runs/", {"project": "demo/late"})
    assert runs.status_code == 200 and runs.json()["runs"] == []
    assert f"#/experiments/{foreign_id}" not in page


@pytest.mark.mlflow
def test_the_link_task_refuses_an_experiment_another_project_holds_by_id(
    lin: User, omar: User, team: Team, other_team: Team, settings: object, mlflow_up: str
) -> None:
    from apps.access.roles import Role
    from apps.accounts.models import Membership

    Membership.objects.filter(user=omar, team=other_team).update(role=Role.LEAD)
    theirs = _linked_project_of(other_team, omar)
    new_name = _unique("renamed")
    MlflowClient(tracking_uri=mlflow_up).rename_experiment(theirs.mlflow_experiment_id, new_name)
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # type: ignore[attr-defined]
    project = services.create_project(lin, team, slug="grab", name="Grab", mlflow_experiment=new_name)
    settings.MLFLOW_TRACKING_URI = mlflow_up  # type: ignore[attr-defined]

    linked = services.link_experiment(project.pk)

    assert linked is not None
    assert (linked.mlflow_state, linked.mlflow_experiment_id) == (ExperimentState.REFUSED, "")
    assert "belongs to another Plinth project" in linked.mlflow_error


@pytest.mark.mlflow
def test_a_platform_admin_attaches_an_existing_experiment_audited(
    lin: User, root: User, team: Team, settings: object, mlflow_up: str
) -> None:
    name = _unique("legacy")
    existing_id = MlflowGateway(mlflow_up).create_experiment(name)
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # type: ignore[attr-defined]
    project = services.create_project(lin, team, slug="legacy", name="Legacy", mlflow_experiment=name)
    settings.MLFLOW_TRACKING_URI = mlflow_up  # type: ignore[attr-defined]
    services.link_experiment(project.pk)
    url = f"/api/v1/projects/{project.pk}/attach-experiment/"

    refused = api_for(lin).post(url, {"experiment": existing_id}, format="json")
    assert refused.status_code == 403, refused.json()

    response = api_for(root).post(url, {"experiment": existing_id}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["mlflow_state"], body["mlflow_experiment_id"]) == ("linked", existing_id)
    event = AuditEvent.objects.get(verb="project.experiment_attached", project_id=project.pk)
    assert event.actor == root
    assert (event.after or {})["mlflow_experiment_id"] == existing_id
    # Repeating it changes nothing; attaching it to a second project is a conflict.
    assert api_for(root).post(url, {"experiment": existing_id}, format="json").status_code == 200
    second = services.create_project(root, team, slug="second", name="Second", mlflow_experiment=_unique("s"))
    clash = api_for(root).post(f"/api/v1/projects/{second.pk}/attach-experiment/", {"experiment": name}, format="json")
    assert clash.status_code == 409, clash.json()
    assert AuditEvent.objects.filter(verb="project.experiment_attached").count() == 1


@pytest.mark.mlflow
def test_a_platform_admin_attaches_from_the_project_page(root: User, team: Team, mlflow_up: str) -> None:
    name = _unique("legacy")
    existing_id = MlflowGateway(mlflow_up).create_experiment(name)
    project = services.create_project(root, team, slug="legacy", name="Legacy", mlflow_experiment=_unique("n"))
    Project.objects.filter(pk=project.pk).update(mlflow_state=ExperimentState.REFUSED)

    response = client_for(root).post("/projects/demo/legacy/attach-experiment/", {"experiment": name})

    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.mlflow_state, project.mlflow_experiment_id) == (ExperimentState.LINKED, existing_id)
    missing = client_for(root).post("/projects/demo/legacy/attach-experiment/", {"experiment": "no-such-thing-x"})
    assert missing.status_code in (400, 409)


@pytest.mark.mlflow
def test_a_platform_admin_may_create_a_project_on_an_existing_experiment(
    root: User, team: Team, mlflow_up: str
) -> None:
    name = _unique("legacy")
    existing_id = MlflowGateway(mlflow_up).create_experiment(name)
    response = api_for(root).post(
        "/api/v1/projects/",
        {"team": "demo", "slug": "legacy", "name": "Legacy", "mlflow_experiment": name, "attach_existing": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    created = AuditEvent.objects.get(verb="project.created", project_id=response.json()["id"])
    assert created.actor == root and (created.after or {})["mlflow_attach_existing"] is True
    linked = services.link_experiment(response.json()["id"])
    assert linked is not None and linked.mlflow_experiment_id == existing_id


@pytest.mark.mlflow
def test_an_experiment_plinth_created_for_the_project_is_recognised_on_a_retry(
    lin: User, team: Team, mlflow_up: str
) -> None:
    project = services.create_project(lin, team, slug=_unique("p"), name="Retry")
    # A crash after MLflow created the experiment but before the id was stored:
    MlflowGateway(mlflow_up).create_experiment(project.mlflow_experiment_name, tags=project.experiment_owner_tags)
    linked = services.link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED


def test_only_a_platform_admin_sees_the_attach_choice_on_the_create_form(lin: User, root: User, team: Team) -> None:
    assert 'name="attach_existing"' not in client_for(lin).get("/projects/new/").content.decode()
    assert 'name="attach_existing"' in client_for(root).get("/projects/new/").content.decode()
    # A lead who sends it anyway gets a new experiment, never an attach.
    response = client_for(lin).post(
        "/projects/new/",
        {
            "team": "demo",
            "slug": "sneaky",
            "name": "Sneaky",
            "gpu_quota": 0,
            "backend": "local",
            "namespace": "",
            "mlflow_experiment": "",
            "attach_existing": "on",
        },
    )
    assert response.status_code == 302
    assert Project.objects.get(slug="sneaky").mlflow_attach_existing is False


@pytest.mark.mlflow
def test_a_rename_in_mlflow_is_followed_by_id(lin: User, team: Team, mlflow_up: str) -> None:
    from apps.projects.tasks import sync_pending_experiments

    project = services.create_project(lin, team, slug=_unique("p"), name="Renamed")
    linked = services.link_experiment(project.pk)
    assert linked is not None
    new_name = _unique("renamed-in-mlflow")
    MlflowClient(tracking_uri=mlflow_up).rename_experiment(linked.mlflow_experiment_id, new_name)

    sync_pending_experiments()

    project.refresh_from_db()
    assert (project.mlflow_experiment_name, project.mlflow_experiment_id) == (new_name, linked.mlflow_experiment_id)
    event = AuditEvent.objects.get(verb="project.experiment_renamed", project_id=project.pk)
    assert (event.after or {})["name"] == new_name
    sync_pending_experiments()  # nothing changed since: no second event
    assert AuditEvent.objects.filter(verb="project.experiment_renamed").count() == 1
