"""Query budgets of every list page and list endpoint, measured with more rows (ROWS) than
any budget allows queries: a query per row (an N+1) cannot fit, whatever else changes.

Budgets are today's count plus a small margin. When a change pushes a list over its
budget, look for the per-row query first (select_related / prefetch_related / annotate);
raise a budget only for a query that runs once per request, and say why in the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apps.access.roles import Role
from apps.accounts import services as account_services
from apps.accounts.models import Team, User
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch, Status, Sweep, Template
from apps.projects import services as project_services
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for, client_for, make_user

ROWS = 25


@dataclass(frozen=True)
class Budget:
    url: str  # "{launch}" and "{sweep}" stand for the ids of the crowd's detailed launch and sweep
    max_queries: int
    rows: Callable[[Any], int] | None  # how many rows the response lists: proof the list was long
    # (None for a page about one object with no list of rows: its budget is held flat by hand)

    @property
    def is_api(self) -> bool:
        return self.url.startswith("/api/")

    def __str__(self) -> str:
        return self.url


def page_items(response: Any) -> int:
    return len(response.context["page"].object_list)


def api_results(response: Any) -> int:
    return len(response.json()["results"])


def sweeps_with_trials(response: Any) -> int:
    """Sweeps listed with their trials (each sweep of the crowd has some): a query per
    sweep for its trials would show here."""
    return sum(1 for sweep in response.json()["results"] if sweep["launches"])


# Today's count + 2. Pages count 2 queries more than their views make: the session and
# the signed-in user.
BUDGETS = [
    # today 9: one of them, once per request, the failed rollouts of the attention list
    Budget("/", 10, lambda r: min(len(r.context["memberships"]), len(r.context["projects"]))),
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
    Budget("/launches/", 9, page_items),  # today 7
    Budget("/launches/sweeps/", 8, page_items),  # today 6
    Budget("/launches/{launch}/", 6, None),  # today 4
    # Today 6, one of them needless: the progress line reads the trials a second time.
    Budget("/launches/sweeps/{sweep}/", 8, lambda r: len(r.context["trials"])),
    Budget("/api/v1/launches/", 4, api_results),  # today 2
    Budget("/api/v1/sweeps/", 5, sweeps_with_trials),  # today 3: the trials of all sweeps in one query
    Budget("/api/v1/templates/", 4, api_results),  # today 2
    # today 12: the usage counts of the listed environments, 5 grouped queries whatever their number
    Budget("/environments/", 14, page_items),
    Budget("/api/v1/environments/", 9, api_results),  # today 7 (the same 5 usage counts)
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


@pytest.fixture
def launch_crowd(
    crowd: User, root: User, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, int]:
    """In lin's teams, each launch, sweep and template made by someone else in another
    project (so that every foreign key of a row is a different object): ROWS team templates
    plus the global one, ROWS launches, ROWS sweeps of 2 trials each, and one sweep of ROWS
    trials. MLflow answers the sweep page's one search with a metric for every trial; the
    detailed launch (a trial) has ROWS lines of log. Returns the detailed launch and sweep."""
    settings.DATA_DIR = tmp_path
    global_template = launch_services.create_template(root, None, **SKLEARN_DIGITS)
    projects = list(Project.objects.filter(team__memberships__user=crowd).select_related("team").order_by("slug"))
    users = list(User.objects.filter(username__startswith="user-").order_by("username"))
    assert len(projects) > ROWS and len(users) == ROWS
    templates = [
        launch_services.create_template(crowd, p.team, **{**SKLEARN_DIGITS, "slug": f"digits-{i:02d}"})
        for i, p in enumerate(projects[:ROWS])
    ]

    def launch(i: int, template: Template, sweep: Sweep | None = None) -> Launch:
        return Launch(
            project=projects[i % len(projects)],
            template=template,
            created_by=users[i % ROWS],
            sweep=sweep,
            status=[Status.RUNNING, Status.SUCCEEDED, Status.QUEUED][i % 3],
            backend="local",
            parameters={"epochs": 20 + i, "alpha": 0.0001 * (i + 1)},
            resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
            mlflow_run_id=f"run-{sweep.pk if sweep else 0}-{i}",
            mlflow_experiment_id="1",
        )

    def sweep(i: int, template: Template, trials: int) -> Sweep:
        made = Sweep.objects.create(
            project=projects[i],
            template=template,
            created_by=users[i],
            strategy="grid",
            space={"alpha": [0.0001 * (k + 1) for k in range(trials)]},
            planned=[{"alpha": 0.0001 * (k + 1)} for k in range(trials)],
            max_trials=trials,
            parallelism=2,
            metric="accuracy",
            mlflow_parent_run_id=f"parent-{i}",
        )
        Launch.objects.bulk_create(launch(i + k, template, made) for k in range(trials))
        return made

    Launch.objects.bulk_create(launch(i, templates[i]) for i in range(ROWS))
    for i in range(ROWS):
        sweep(i, templates[i], 2)
    detailed_sweep = sweep(0, global_template, ROWS)
    trials = list(detailed_sweep.trials.all())
    runs = [
        {"info": {"run_id": t.mlflow_run_id}, "data": {"metrics": [{"key": "accuracy", "value": 0.5 + k / 100}]}}
        for k, t in enumerate(trials)
    ]
    monkeypatch.setattr(MlflowGateway, "search_runs", lambda self, *a, **k: (runs, ""))
    detailed = trials[-1]
    folder = tmp_path / "launches" / str(detailed.pk)
    folder.mkdir(parents=True)
    (folder / "output.log").write_text("".join(f"epoch {k} accuracy 0.9\n" for k in range(ROWS)))
    return {"launch": detailed.pk, "sweep": detailed_sweep.pk}


@pytest.fixture
def environment_crowd(crowd: User, root: User) -> None:
    """ROWS environments in lin's teams, each with its own build, a replacement and its
    team's project using it (so every related row of a listed environment differs)."""
    from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState

    projects = list(Project.objects.filter(team__memberships__user=crowd).select_related("team").order_by("slug"))
    for i, project in enumerate(projects[:ROWS]):
        build = EnvironmentBuild.objects.create(requirements_hash=f"{i:064x}", status=BuildStatus.READY, progress=100)
        base = Environment.objects.create(team=project.team, name=f"base-{i:02d}", state=EnvironmentState.READY)
        env = Environment.objects.create(
            team=project.team,
            name=f"env-{i:02d}",
            build=build,
            replaced_by=base,
            created_by=root,
            state=EnvironmentState.DEPRECATED,
        )
        Project.objects.filter(pk=project.pk).update(environment=env)


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_list_stays_within_its_query_budget(
    budget: Budget,
    crowd: User,
    launch_crowd: dict[str, int],
    environment_crowd: None,
    django_assert_max_num_queries: Any,
) -> None:
    assert budget.max_queries < ROWS, "a budget this high would let a query per row through"
    client = api_for(crowd) if budget.is_api else client_for(crowd)
    with django_assert_max_num_queries(budget.max_queries):
        response = client.get(budget.url.format(**launch_crowd))
    assert response.status_code == 200
    if budget.rows is not None:
        assert budget.rows(response) >= ROWS, f"{budget} listed too few rows to expose a query per row"
