"""`?template=<slug>` names the same template on the launch page as in the API: the
project's team's template first, then the global one; team templates of different teams
may share a slug, so without a project an ambiguous slug names none (the picker shows)."""

from __future__ import annotations

import pytest

from apps.accounts.models import Membership, Team, User
from apps.launches.lookups import template_from
from apps.launches.models import Template
from apps.projects.models import Project
from tests.conftest import client_for
from tests.launches.conftest import make_template

pytestmark = pytest.mark.django_db

COMMAND = ["python", "-c", "print(1)"]


@pytest.fixture
def in_both(ada: User, other_team: Team) -> User:
    """ada, a member of demo, is also a member of other: she sees both teams' templates."""
    Membership.objects.create(team=other_team, user=ada, role="member")
    ada.forget_team_roles()
    return ada


@pytest.fixture
def trains(team: Team, other_team: Team) -> dict[str, Template]:
    return {
        "demo": make_template(team, "train", COMMAND),
        "other": make_template(other_team, "train", COMMAND),
        "global": make_template(None, "train", COMMAND),
    }


def shown(user: User, query: str) -> Template | None:
    response = client_for(user).get(f"/launches/new/?{query}")
    assert response.status_code == 200
    template: Template | None = response.context.get("template")
    return template


@pytest.mark.parametrize("team_of_project", ["demo", "other"])
def test_a_slug_names_the_projects_teams_template_on_the_page_and_in_the_api(
    team_of_project: str, in_both: User, trains: dict[str, Template], project: Project, other_project: Project
) -> None:
    chosen = project if team_of_project == "demo" else other_project
    assert shown(in_both, f"template=train&project={chosen.pk}") == trains[team_of_project]
    assert template_from(in_both, chosen, "train") == trains[team_of_project]


def test_without_a_team_template_the_global_one_is_named(
    in_both: User, team: Team, other_team: Team, project: Project
) -> None:
    shared = make_template(None, "evaluate", COMMAND)
    make_template(other_team, "evaluate", COMMAND)
    assert shown(in_both, f"template=evaluate&project={project.pk}") == shared
    assert template_from(in_both, project, "evaluate") == shared


def test_an_ambiguous_slug_without_a_project_shows_the_picker(in_both: User, trains: dict[str, Template]) -> None:
    response = client_for(in_both).get("/launches/new/?template=train")
    assert response.status_code == 200
    assert "template" not in response.context or response.context["template"] is None
    assert "launches/pick_template.html" in [t.name for t in response.templates]


def test_a_slug_only_one_template_carries_needs_no_project(ada: User, team: Team) -> None:
    only = make_template(team, "finetune", COMMAND)
    assert shown(ada, "template=finetune") == only


def test_another_teams_template_is_never_named_by_slug(ada: User, other_team: Team, project: Project) -> None:
    make_template(other_team, "secret", COMMAND)
    response = client_for(ada).get(f"/launches/new/?template=secret&project={project.pk}")
    assert "launches/pick_template.html" in [t.name for t in response.templates]
