"""The lists that now show an environment (launches, templates, projects; pages and API)
stay within tests/test_query_budgets.py's budgets when every row names a different one
(half of them a team's own, whose label needs the team): the environment and its team are
joined, not fetched per row."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.environments.models import Environment, EnvironmentState
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from tests.conftest import api_for, client_for
from tests.launches.conftest import make_template

pytestmark = pytest.mark.django_db

ROWS = 25


@pytest.fixture
def environments(team: Team) -> list[Environment]:
    return [
        Environment.objects.create(
            team=team if i % 2 else None, name=f"env-{i:02d}", version=1, state=EnvironmentState.READY
        )
        for i in range(ROWS)
    ]


@pytest.fixture
def crowd(lin: User, team: Team, project: Project, environments: list[Environment]) -> None:
    for i, env in enumerate(environments):
        make_template(team, f"t-{i:02d}", ["python", "train.py"], environment=env)
        Project.objects.create(
            team=team, slug=f"p-{i:02d}", name=f"P {i}", namespace=f"plinth-demo-p-{i:02d}", environment=env
        )
    templates = list(team.templates.order_by("slug"))
    Launch.objects.bulk_create(
        Launch(
            project=project,
            template=templates[i],
            created_by=lin,
            environment=environments[i],
            status=Status.SUCCEEDED,
            backend="local",
            resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
            mlflow_run_id=f"run-{i}",
            mlflow_experiment_id="1",
        )
        for i in range(ROWS)
    )


@pytest.mark.parametrize(
    ("url", "budget", "count"),
    [
        ("/launches/", 9, lambda r: len(r.context["page"].object_list)),
        ("/api/v1/launches/", 4, lambda r: len(r.json()["results"])),
        ("/api/v1/templates/", 4, lambda r: len(r.json()["results"])),
        ("/api/v1/projects/", 4, lambda r: len(r.json()["results"])),
        ("/console/templates/", 9, lambda r: len(r.context["page"].object_list)),
    ],
)
def test_a_list_naming_environments_stays_within_its_budget(
    url: str, budget: int, count: Any, lin: User, crowd: None, django_assert_max_num_queries: Any
) -> None:
    client = api_for(lin) if url.startswith("/api/") else client_for(lin)
    with django_assert_max_num_queries(budget):
        response = client.get(url)
    assert response.status_code == 200
    assert count(response) >= ROWS
    text = response.content.decode()
    assert "env-00:1" in text and "demo/env-01:1" in text


def test_the_launch_page_naming_a_teams_environment_stays_within_its_budget(
    lin: User, crowd: None, django_assert_max_num_queries: Any
) -> None:
    launch = Launch.objects.filter(environment__team__isnull=False).first()
    assert launch is not None
    assert launch.environment is not None
    client = client_for(lin)
    with django_assert_max_num_queries(6):  # tests/test_query_budgets.py's budget for /launches/{launch}/
        response = client.get(f"/launches/{launch.pk}/")
    assert response.status_code == 200
    assert f"demo/{launch.environment.name}:1" in response.content.decode()
