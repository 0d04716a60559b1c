"""Query budgets of the run pages and endpoints (as tests/test_query_budgets.py does for the
other apps), with ROWS runs — each from a launch by someone else, in a project of a team of
the reader's — so that a query per run cannot fit. MLflow is a FakeMlflow.

Budgets are today's count + 2; pages count 2 queries more than their views make (the
session and the signed-in user)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status
from apps.projects.models import ExperimentState, Project
from tests.conftest import api_for, client_for, make_user
from tests.tracking.fakes import FakeMlflow, make_run

ROWS = 25
IDS = "{ids}"


@dataclass(frozen=True)
class Budget:
    url: str  # "{ids}": the comma-separated ids of all runs
    max_queries: int
    rows: Callable[[Any], int]

    def __str__(self) -> str:
        return self.url.split("?")[0] + (" (compare)" if "compare" in self.url else "")


def page_rows(response: Any) -> int:
    return len(response.context["rows"])


def api_runs(response: Any) -> int:
    return len(response.json()["runs"])


BUDGETS = [
    Budget("/runs/", 6, lambda r: len(r.context["projects"])),  # today 4
    Budget("/runs/demo/demo/", 7, page_rows),  # today 5
    # Compare, cold: 3 reads (projects, launches, cache) and one write for all rows (savepoint,
    # a single INSERT, release); warm: the 3 reads.
    Budget("/runs/compare/?run_ids={ids}", 11, page_rows),  # today 9 cold, 6 warm
    Budget("/api/v1/runs/?project=demo/demo", 5, api_runs),  # today 3
    Budget("/api/v1/runs/compare/?run_ids={ids}", 8, api_runs),  # today 6 cold, 3 warm
]


@pytest.fixture
def crowd(lin: User, team: Team, project: Project, monkeypatch: pytest.MonkeyPatch) -> tuple[User, str]:
    """ROWS runs in demo/demo, each launched by a different member, plus ROWS more projects
    lin can see. Returns a fresh copy of lin (no per-user cache warm) and the run ids."""
    fake = FakeMlflow().install(monkeypatch)
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    project.refresh_from_db()
    template = launch_services.create_template(make_user("admin", is_platform_admin=True), None, **SKLEARN_DIGITS)
    ids = []
    for i in range(ROWS):
        member = make_user(f"user-{i:02d}")
        Membership.objects.create(team=team, user=member, role=Role.MEMBER)
        run_id = f"{i:032x}"
        fake.add(
            make_run(
                run_id,
                "1",
                name=f"run-{i:02d}",
                metrics={"loss": [1.0 / (i + 1), 0.5], "accuracy": [0.5, 0.6 + i / 100]},
                params={"lr": str(0.1 / (i + 1)), "seed": str(i)},
            )
        )
        Launch.objects.create(
            project=project,
            template=template,
            created_by=member,
            status=Status.SUCCEEDED,
            backend="local",
            mlflow_run_id=run_id,
            mlflow_experiment_id="1",
        )
        other = Team.objects.create(slug=f"team-{i:02d}", name=f"Team {i}")
        Membership.objects.create(team=other, user=lin, role=Role.VIEWER)
        Project.objects.create(
            team=other, slug=f"p-{i:02d}", name=f"P {i}", namespace=f"p-{i:02d}", mlflow_experiment_name=f"x/{i}"
        )
        ids.append(run_id)
    return User.objects.get(pk=lin.pk), ",".join(ids)


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_run_list_stays_within_its_query_budget(
    budget: Budget, crowd: tuple[User, str], django_assert_max_num_queries: Any
) -> None:
    assert budget.max_queries < ROWS, "a budget this high would let a query per row through"
    user, ids = crowd
    url = budget.url.format(ids=ids)
    client = api_for(user) if budget.url.startswith("/api/") else client_for(user)
    for attempt in ("cold", "warm"):
        with django_assert_max_num_queries(budget.max_queries):
            response = client.get(url)
        assert response.status_code == 200, attempt
        assert budget.rows(response) >= ROWS, f"{budget} listed too few rows to expose a query per row"
