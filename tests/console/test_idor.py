"""IDOR probe: for every console route about an object, a lead of ANOTHER team (olga, who
may use the console for her own team) gets 404 for every id of team demo's objects, and
so does every other object route issue 6 added; omar, who leads nothing, gets 403 from
every console route whatever the id (the same answer for ids that exist and ids that do
not, so nothing leaks). The ids are all of demo's: its team, projects, members, SSO
mappings, team templates."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from apps.access.roles import Role
from apps.accounts.models import Membership, SsoGroupMapping, Team, User
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.projects.models import Project
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def olga(other_team: Team) -> User:
    user = make_user("olga")
    Membership.objects.create(team=other_team, user=user, role=Role.LEAD)
    return user


@pytest.fixture
def demo_ids(team: Team, project: Project, lin: User, ada: User, vic: User) -> dict[str, list[dict[str, Any]]]:
    second = Project.objects.create(
        team=team, slug="second", name="Second", namespace="plinth-demo-second", mlflow_experiment_name="demo/second"
    )
    mapping = SsoGroupMapping.objects.create(team=team, group="demo-people", role=Role.MEMBER)
    template = launch_services.create_template(lin, team, **{**SKLEARN_DIGITS, "slug": "demo-digits"})
    projects = [{"team": "demo", "slug": p.slug} for p in (project, second)]
    return {
        "team": [{"slug": "demo"}],
        "project": projects,
        "user": [{"username": u.username} for u in (lin, ada, vic)],
        "mapping": [{"slug": "demo", "pk": mapping.pk}],
        "template": [{"pk": template.pk}],
    }


# route name -> (which ids, method, body)
OBJECT_ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("console:team-detail", "team", "get", {}),
    ("console:team-budget", "team", "post", {"gpu_budget": 99}),
    ("console:sso-add", "team", "post", {"group": "x", "role": "lead"}),
    ("console:sso-delete", "mapping", "post", {}),
    ("console:project-detail", "project", "get", {}),
    ("console:project-sync", "project", "post", {}),
    ("console:user-detail", "user", "get", {}),
    ("console:template-edit", "template", "get", {}),
    ("console:template-edit", "template", "post", {"name": "Mine now"}),
    ("projects:access-sync", "project", "get", {}),
]


@pytest.mark.parametrize(("name", "ids", "method", "body"), OBJECT_ROUTES, ids=lambda v: str(v))
def test_a_lead_of_another_team_gets_404_for_every_id_of_demos_objects(
    olga: User, demo_ids: dict[str, list[dict[str, Any]]], name: str, ids: str, method: str, body: dict[str, Any]
) -> None:
    client = client_for(olga)
    for kwargs in demo_ids[ids]:
        url = reverse(name, kwargs=kwargs)
        response = getattr(client, method)(url, body)
        assert response.status_code == 404, f"{method.upper()} {url}: olga got {response.status_code}"
    assert Team.objects.get(slug="demo").gpu_budget == 8
    assert SsoGroupMapping.objects.filter(team__slug="demo").count() == 1


@pytest.mark.parametrize(("name", "ids", "method", "body"), OBJECT_ROUTES, ids=lambda v: str(v))
def test_someone_who_leads_nothing_gets_the_same_answer_for_real_and_made_up_ids(
    omar: User, demo_ids: dict[str, list[dict[str, Any]]], name: str, ids: str, method: str, body: dict[str, Any]
) -> None:
    client = client_for(omar)
    made_up = {k: ("nope" if isinstance(v, str) else 999_999) for k, v in demo_ids[ids][0].items()}
    answers = {getattr(client, method)(reverse(name, kwargs=kw), body).status_code for kw in [*demo_ids[ids], made_up]}
    assert len(answers) == 1, f"{name}: omar can tell real ids from made-up ones ({answers})"


def test_olgas_own_console_shows_none_of_demo(olga: User, demo_ids: Any) -> None:
    client = client_for(olga)
    pages = ["/console/", "/console/users/", "/console/teams/", "/console/projects/", "/console/templates/"]
    for page in pages:
        body = client.get(page).content.decode()
        assert "demo" not in body.replace("/static/", ""), page
    assert client.get("/audit/export.csv").status_code == 200
    assert b"demo" not in b"".join(client.get("/audit/export.csv").streaming_content)  # type: ignore[attr-defined]
