"""Query budgets of every list page and list endpoint, measured with more rows (ROWS) than
any budget allows queries: a query per row (an N+1) cannot fit, whatever else changes.

Budgets are today's count plus a small margin. When a change pushes a list over its
budget, look for the per-row query first (select_related / prefetch_related / annotate);
raise a budget only for a query that runs once per request, and say why in the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from apps.access.roles import Role
from apps.accounts import services as account_services
from apps.accounts.models import Team, User
from apps.projects import services as project_services
from apps.projects.models import Project
from tests.conftest import api_for, client_for, make_user

ROWS = 25


@dataclass(frozen=True)
class Budget:
    url: str
    max_queries: int
    rows: Callable[[Any], int]  # how many rows the response lists: proof the list was long

    @property
    def is_api(self) -> bool:
        return self.url.startswith("/api/")

    def __str__(self) -> str:
        return self.url


def page_items(response: Any) -> int:
    return len(response.context["page"].object_list)


def api_results(response: Any) -> int:
    return len(response.json()["results"])


# Today's count + 2. Pages count 2 queries more than their views make: the session and
# the signed-in user.
BUDGETS = [
    Budget("/", 8, lambda r: min(len(r.context["memberships"]), len(r.context["projects"]))),  # today 6
    Budget("/teams/", 7, page_items),  # today 5
    Budget("/projects/", 9, page_items),  # today 7
    Budget("/audit/", 9, page_items),  # today 7
    Budget("/teams/demo/", 8, lambda r: len(r.context["members"])),  # today 6
    Budget("/account/", 7, lambda r: len(r.context["tokens"])),  # today 5
    Budget("/api/v1/teams/", 4, api_results),  # today 2
    Budget("/api/v1/projects/", 4, api_results),  # today 2
    Budget("/api/v1/audit/", 5, api_results),  # today 3
    Budget("/api/v1/teams/demo/members/", 6, api_results),  # today 4
    Budget("/api/v1/me/", 5, lambda r: len(r.json()["memberships"])),  # today 3
]


@pytest.fixture
def crowd(lin: User, root: User, team: Team, project: Project) -> User:
    """lin, lead of demo, gets ROWS more teams to lead, each with a project; demo gets ROWS
    more members; lin gets ROWS API tokens. The services write the audit events lin reads.
    Returns a fresh copy of lin, so no per-user cache is warm before the measured request."""
    teams = [
        account_services.create_team(root, slug=f"team-{i:02d}", name=f"Team {i}", gpu_budget=1, lead="lin")
        for i in range(ROWS)
    ]
    lin.forget_team_roles()  # any roles cached on this object predate the teams just made
    for i, each in enumerate(teams):
        project_services.create_project(lin, each, slug=f"project-{i:02d}", name=f"Project {i}", gpu_quota=1)
        account_services.add_member(lin, team, username=make_user(f"user-{i:02d}").username, role=Role.MEMBER)
        account_services.create_api_token(lin, name=f"token {i}")
    return User.objects.get(pk=lin.pk)


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_list_stays_within_its_query_budget(budget: Budget, crowd: User, django_assert_max_num_queries: Any) -> None:
    assert budget.max_queries < ROWS, "a budget this high would let a query per row through"
    client = api_for(crowd) if budget.is_api else client_for(crowd)
    with django_assert_max_num_queries(budget.max_queries):
        response = client.get(budget.url)
    assert response.status_code == 200
    assert budget.rows(response) >= ROWS, f"{budget} listed too few rows to expose a query per row"
