"""Query budgets of the GPU pages and endpoints, measured with ROWS of everything (GPUs,
holders in different teams and projects, findings, usage groups): a query per row cannot
fit under any budget here. Budgets are today's count + 2 (pages count the session and the
user); raise one only for a query that runs once per request, and say why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts import services as account_services
from apps.accounts.models import User
from apps.gpus import services as gpu_services
from apps.gpus.models import FindingStatus, Gpu, IdleExemption, IdleFinding, SourceStatus
from apps.gpus.store import floor_time, insert_samples, roll_up, rolled_until
from apps.launches.models import Launch, Status
from apps.projects import services as project_services
from apps.projects.models import Project
from tests.compute.fakes import make_template
from tests.conftest import api_for, client_for, make_user

ROWS = 25


@dataclass(frozen=True)
class Budget:
    url: str  # "{launch}": the launch holding ROWS GPUs
    max_queries: int
    rows: Callable[[Any], int]

    def __str__(self) -> str:
        return self.url


def csv_rows(response: Any) -> int:
    return len(response.content.decode().strip().splitlines()) - 1


BUDGETS = [
    Budget("/gpus/", 16, lambda r: len(r.context["page"].object_list)),  # today 14
    Budget("/gpus/idle/", 8, lambda r: len(r.context["findings"])),  # today 6
    Budget("/gpus/usage/?group_by=project", 17, lambda r: len(r.context["rows"])),  # today 15
    Budget("/gpus/usage.csv?group_by=project", 12, csv_rows),  # today 10
    # The panel reads the roll-up mark three times (GPUs held, series, totals): once per part.
    Budget("/gpus/launches/{launch}/", 19, lambda r: len(r.context["held"])),  # today 17
    Budget("/api/v1/gpus/", 4, lambda r: len(r.json()["results"])),  # today 2
    Budget("/api/v1/gpus/usage/?group_by=project", 10, lambda r: len(r.json()["groups"])),  # today 8
]


@pytest.fixture
def gpu_crowd(lin: User, root: User) -> dict[str, Any]:
    """lin leads ROWS teams with a project each; in each, a launch by a different member
    holds a GPU (a different model per few GPUs), idle with a finding, some exempt; two
    hours of samples, the first rolled up; one more launch holds ROWS GPUs."""
    projects: list[Project] = []
    users: list[User] = []
    for i in range(ROWS):
        team = account_services.create_team(root, slug=f"gt-{i:02d}", name=f"T{i}", gpu_budget=ROWS + 1, lead="lin")
        users.append(make_user(f"gu-{i:02d}"))
        account_services.add_member(root, team, username=users[-1].username, role="member")
        projects.append(
            project_services.create_project(root, team, slug=f"gp-{i:02d}", name=f"P{i}", gpu_quota=ROWS + 1)
        )
    launches = []
    exempt: set[int] = set()
    for i, project in enumerate(projects):
        launch = Launch.objects.create(
            project=project,
            template=make_template(project, team=project.team),
            created_by=users[i],
            status=Status.RUNNING,
            backend="kubernetes",
            resources={"gpus": 1},
            gpus=1,
        )
        launches.append(launch)
        if i % 3 == 0:
            IdleExemption.objects.create(launch=launch, reason="debugging", created_by=lin)
            exempt.add(launch.pk)
    big = Launch.objects.create(
        project=projects[0],
        template=make_template(projects[0], team=projects[0].team),
        created_by=users[0],
        status=Status.RUNNING,
        backend="kubernetes",
        resources={"gpus": ROWS},
        gpus=ROWS,
    )
    holders = [*launches, *([big] * ROWS)]
    gpus = [
        Gpu(
            node=f"node-{n // 8:02d}",
            index=n % 8,
            product=f"Model-{n % 4}",
            allocated=True,
            launch=launch,
            project=launch.project,
            team=launch.project.team,
            namespace=launch.project.namespace,
            pod=f"plinth-{launch.pk}-x",
            utilization=1.0,
        )
        for n, launch in enumerate(holders)
    ]
    gpus += [Gpu(node="node-free", index=i, product="Model-0", utilization=0.0) for i in range(ROWS)]
    Gpu.objects.bulk_create(gpus)
    gpus = list(Gpu.objects.select_related("launch__project").order_by("pk"))
    now = floor_time(timezone.now(), 60)
    rows: list[tuple[Any, ...]] = []
    for gpu in gpus:
        holder = gpu.launch
        for minute in range(120):
            at = now - timedelta(minutes=minute)
            if holder is None:
                rows.append((gpu.pk, at, 0.0, 0, 60.0, None, False, None, None, None, ""))
            else:
                project = holder.project
                rows.append((gpu.pk, at, 1.0, 900, 70.0, None, True, holder.pk, project.pk, project.team_id, ""))
    insert_samples(rows)
    roll_up(now=now)
    for gpu in gpus[:ROWS]:
        IdleFinding.objects.create(
            gpu=gpu,
            launch=gpu.launch,
            project=gpu.project,
            team=gpu.team,
            status=FindingStatus.EXEMPT if gpu.launch_id in exempt else FindingStatus.OPEN,
            idle_since=now - timedelta(minutes=40),
            checked_at=now,
        )
    for k in range(4):
        gpu_services.set_gpu_price(root, f"Model-{k}", str(1 + k))
    return {"launch": big.pk, "lead": User.objects.get(pk=lin.pk)}


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_gpu_list_stays_within_its_query_budget(
    budget: Budget, gpu_crowd: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    assert budget.max_queries < ROWS, "a budget this high would let a query per row through"
    lead = gpu_crowd["lead"]
    client = api_for(lead) if budget.url.startswith("/api/") else client_for(lead)
    with django_assert_max_num_queries(budget.max_queries):
        response = client.get(budget.url.format(**gpu_crowd))
    assert response.status_code == 200
    assert budget.rows(response) >= ROWS, f"{budget} listed too few rows to expose a query per row"


@pytest.mark.parametrize(
    "url", ["/gpus/", "/gpus/usage/?group_by=project", "/gpus/launches/{launch}/"], ids=lambda url: url
)
def test_a_gpu_page_makes_as_many_queries_however_far_the_roll_up_lags(url: str, gpu_crowd: dict[str, Any]) -> None:
    """The raw tail after the roll-up mark is read in one query, not one per hour: a page
    opened in the first minute of an hour (the last hour not rolled up yet) or after a
    sampler outage counts the same queries, and the budget above cannot flake."""
    client = client_for(gpu_crowd["lead"])
    url = url.format(**gpu_crowd)
    mark = rolled_until()
    assert mark is not None
    counts = []
    for lag_hours in (0, 1, 2):
        SourceStatus.objects.filter(name="rollup").update(mark=mark - timedelta(hours=lag_hours))
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[1:] == counts[:1] * 2, counts
