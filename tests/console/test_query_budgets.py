"""Query budgets of the console's list pages with ROWS rows (see tests/test_query_budgets.py
for the rule): a query per row cannot fit."""

from __future__ import annotations

from typing import Any

import pytest

from apps.access.roles import Role
from apps.accounts import services as account_services
from apps.accounts.models import Membership, SsoGroupMapping, Team, User
from apps.console.models import SyncState
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.projects.models import Project
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db
ROWS = 25


@pytest.fixture
def crowd(root: User, lin: User, team: Team) -> User:
    """ROWS teams led by lin, each with a project (and its two sync rows) and a template;
    ROWS more members in demo, half of them from an SSO group, each with a token."""
    team.gpu_budget = 1000
    team.save()
    for i in range(ROWS):
        each = Team.objects.create(slug=f"team-{i:02d}", name=f"Team {i}", gpu_budget=2)
        Membership.objects.create(team=each, user=lin, role=Role.LEAD)
        project = Project.objects.create(
            team=each, slug="p", name="P", gpu_quota=1, namespace=f"plinth-t{i}-p", mlflow_experiment_name=f"t{i}/p"
        )
        SyncState.objects.create(project=project, target="cluster", status="in_sync")
        SyncState.objects.create(project=project, target="mlflow", status="in_sync")
        launch_services.create_template(root, each, **{**SKLEARN_DIGITS, "slug": f"digits-{i:02d}"})
        person = make_user(f"user-{i:02d}")
        source = "direct" if i % 2 else "sso:ml-team"
        Membership.objects.create(team=team, user=person, role=Role.MEMBER, source=source)
        account_services.create_api_token(person, name="ci")
        SsoGroupMapping.objects.create(team=each, group=f"group-{i}", role=Role.VIEWER)
    return User.objects.get(pk=lin.pk)


def page_items(response: Any) -> int:
    return len(response.context["page"].object_list)


# (url, who, budget, rows in the response); pages count the session and user queries too.
BUDGETS: list[tuple[str, str, int, Any]] = [
    ("/console/", "lin", 10, None),
    ("/console/users/", "lin", 8, page_items),
    ("/console/users/", "root", 8, page_items),
    ("/console/teams/", "lin", 8, lambda r: len(r.context["teams"])),
    ("/console/teams/demo/", "lin", 10, lambda r: len(r.context["access"])),
    ("/console/projects/", "lin", 8, page_items),
    ("/console/projects/team-00/p/", "lin", 12, None),
    ("/console/templates/", "lin", 8, page_items),
    ("/console/users/lin/", "root", 10, lambda r: len(r.context["access"])),
    ("/audit/", "root", 9, page_items),
]


@pytest.mark.parametrize(("url", "who", "budget", "rows"), BUDGETS, ids=[f"{b[0]} {b[1]}" for b in BUDGETS])
def test_a_console_list_stays_within_its_query_budget(
    crowd: User, root: User, url: str, who: str, budget: int, rows: Any, django_assert_max_num_queries: Any
) -> None:
    assert budget < ROWS
    user = crowd if who == "lin" else User.objects.get(pk=root.pk)
    client = client_for(user)
    with django_assert_max_num_queries(budget):
        response = client.get(url)
    assert response.status_code == 200
    if rows is not None:
        assert rows(response) >= ROWS, f"{url} listed too few rows to expose a query per row"
