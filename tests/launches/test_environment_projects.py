"""A project's default environment (set to the platform default when it is created; leads
change it, audited) and a template's pinned one (its editors pick among those they may
use). Only ready or deprecated environments can be picked."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.core.errors import InvalidInput
from apps.environments.models import Environment, EnvironmentState
from apps.launches import services as launch_services
from apps.launches.models import Launch, Template
from apps.projects import services
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db


def make_env(name: str, *, team: Team | None = None, version: int = 1, **fields: Any) -> Environment:
    fields.setdefault("state", EnvironmentState.READY)
    return Environment.objects.create(team=team, name=name, version=version, image=f"r.example/{name}:1", **fields)


# --- projects ----------------------------------------------------------------------------------
def test_a_new_project_gets_the_platform_default_of_the_moment(lin: User, team: Team) -> None:
    first = services.create_project(lin, team, slug="one", name="One")
    assert first.environment == Environment.objects.get(is_default=True)
    created = AuditEvent.objects.get(verb=AuditVerb.PROJECT_CREATED, target_id=str(first.pk))
    assert (created.after or {}).get("environment") == "portal:1"

    sklearn = make_env("sklearn-1.7")
    Environment.objects.filter(is_default=True).update(is_default=False)
    Environment.objects.filter(pk=sklearn.pk).update(is_default=True)
    second = services.create_project(lin, team, slug="two", name="Two")
    assert second.environment_id == sklearn.pk
    first.refresh_from_db()
    assert first.environment.label == "portal:1"  # a later default does not move existing projects


def test_a_lead_changes_the_projects_environment_through_the_api_and_it_is_audited(lin: User, project: Project) -> None:
    sklearn = make_env("sklearn-1.7")
    response = api_for(lin).patch(f"/api/v1/projects/{project.pk}/", {"environment": "sklearn-1.7:1"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["environment"] == "sklearn-1.7:1"
    assert response.json()["environment_id"] == sklearn.pk
    project.refresh_from_db()
    assert project.environment_id == sklearn.pk
    event = AuditEvent.objects.filter(verb=AuditVerb.PROJECT_UPDATED, target_id=str(project.pk)).latest("id")
    assert ((event.before or {}).get("environment"), (event.after or {}).get("environment")) == ("", "sklearn-1.7:1")
    assert event.actor_id == lin.pk


@pytest.mark.parametrize("state", [EnvironmentState.FAILED, EnvironmentState.BUILDING, EnvironmentState.RETIRED])
def test_the_api_refuses_an_environment_that_is_not_selectable(state: str, lin: User, project: Project) -> None:
    broken = make_env("broken", state=state)
    response = api_for(lin).patch(f"/api/v1/projects/{project.pk}/", {"environment": str(broken.pk)}, format="json")
    assert response.status_code == 400, response.json()
    assert "environment" in response.json()
    project.refresh_from_db()
    assert project.environment_id is None
    assert not AuditEvent.objects.filter(verb=AuditVerb.PROJECT_UPDATED).exists()


def test_another_teams_environment_is_refused_and_a_member_cannot_change_it(
    lin: User, ada: User, other_team: Team, project: Project
) -> None:
    theirs = make_env("theirs", team=other_team)
    response = api_for(lin).patch(f"/api/v1/projects/{project.pk}/", {"environment": str(theirs.pk)}, format="json")
    assert response.status_code == 400
    mine = make_env("mine")
    assert (
        api_for(ada).patch(f"/api/v1/projects/{project.pk}/", {"environment": str(mine.pk)}, format="json").status_code
        == 403
    )
    project.refresh_from_db()
    assert project.environment_id is None


def test_the_project_page_shows_and_changes_the_environment(lin: User, project: Project) -> None:
    sklearn = make_env("sklearn-1.7")
    make_env("failed-one", state=EnvironmentState.FAILED)
    client = client_for(lin)
    page = client.get("/projects/demo/demo/").content.decode()
    assert "sklearn-1.7:1" in page and "failed-one:1" not in page
    response = client.post(
        "/projects/demo/demo/edit/",
        {
            "name": "Demo project",
            "description": "",
            "gpu_quota": "2",
            "backend": project.backend,
            "environment": str(sklearn.pk),
        },
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.environment_id == sklearn.pk
    assert "sklearn-1.7:1" in client.get("/projects/demo/demo/").content.decode()


# --- templates ---------------------------------------------------------------------------------
def test_a_lead_pins_an_environment_on_a_team_template_through_the_api(lin: User, team: Team, other_team: Team) -> None:
    template = make_template(team, "train", ["python", "train.py"])
    ours = make_env("ours", team=team)
    response = api_for(lin).patch(f"/api/v1/templates/{template.pk}/", {"environment": "demo/ours:1"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["environment"] == "demo/ours:1"
    template.refresh_from_db()
    assert template.environment_id == ours.pk
    event = AuditEvent.objects.filter(verb=AuditVerb.TEMPLATE_UPDATED).latest("id")
    assert event.after == {"environment": "demo/ours:1"}

    theirs = make_env("theirs", team=other_team)
    refused = api_for(lin).patch(f"/api/v1/templates/{template.pk}/", {"environment": theirs.pk}, format="json")
    assert refused.status_code == 400 and "environment" in refused.json()
    unpinned = api_for(lin).patch(f"/api/v1/templates/{template.pk}/", {"environment": None}, format="json")
    assert unpinned.status_code == 200 and unpinned.json()["environment"] == ""


def test_a_global_template_may_pin_only_a_platform_wide_environment(root: User, team: Team) -> None:
    teams_own = make_env("teams-own", team=team)
    with pytest.raises(InvalidInput) as refused:
        launch_services.create_template(
            root, None, slug="g", image="python:3.12", command=["python"], environment=teams_own.pk
        )
    assert refused.value.fields.get("environment")
    shared = make_env("shared")
    created = launch_services.create_template(
        root, None, slug="g", image="python:3.12", command=["python"], environment="shared:1"
    )
    assert created.environment_id == shared.pk


def test_the_console_template_form_pins_an_environment(
    lin: User, team: Team, ada: User, linked_project: Project, fake_mlflow: FakeMlflow
) -> None:
    template = make_template(team, "train", ["python", "train.py"])
    ours = make_env("ours", team=team)
    client = client_for(lin)
    form = client.get(f"/console/templates/{template.pk}/").content.decode()
    assert "demo/ours:1" in form
    response = client.post(
        f"/console/templates/{template.pk}/",
        {
            "name": "train",
            "description": "",
            "image": "python:3.12",
            "command": '["python", "train.py"]',
            "parameters": "{}",
            "default_resources": "{}",
            "max_resources": "{}",
            "max_runtime_seconds": "600",
            "backends": ["local", "kubernetes"],
            "is_active": "on",
            "environment": str(ours.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Template.objects.get(pk=template.pk).environment_id == ours.pk
    launch = launch_services.create_launch(ada, linked_project, Template.objects.get(pk=template.pk))
    assert Launch.objects.get(pk=launch.pk).environment_id == ours.pk
