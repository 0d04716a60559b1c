"""Query budgets of the deployment pages and endpoints, measured with more rows (ROWS)
than any budget allows queries, so a query per row (an N+1) cannot fit. Budgets are
today's count + 2; pages count 2 more than their views make (the session and the user).

The serving backend is the FakeServing here: its calls are not database queries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.deployments.models import (
    Deployment,
    DeploymentStatus,
    Revision,
    RevisionStatus,
    RolloutEvent,
    RolloutStep,
    ServingKey,
)
from apps.deployments.serializers import REVISIONS_SHOWN
from apps.environments.models import Environment, EnvironmentState
from apps.projects.models import Project
from apps.registry.models import AliasHistory, RegisteredModel
from tests.conftest import api_for, client_for
from tests.deployments.fakes import FakeServing

pytestmark = pytest.mark.django_db

ROWS = 25


@dataclass(frozen=True)
class Budget:
    url: str  # "{deployment}" stands for the id of the crowd's detailed deployment
    max_queries: int
    rows: Callable[[Any], int]  # how many rows the answer lists: proof the list was long
    at_least: int = ROWS  # rows it must list (more than max_queries, so a query per row shows)

    @property
    def is_api(self) -> bool:
        return self.url.startswith("/api/")

    def __str__(self) -> str:
        return self.url


def detail_rows(response: Any) -> int:
    context = response.context
    return min(
        len(context["revisions"]),
        len(context["events"]),
        len(context["keys"]),
        len(context["figures"][0].figure["data"]),
    )


# Today's counts: 9, 10, 4, 5, 3.
BUDGETS = [
    Budget("/deployments/projects/demo/demo/", 11, lambda r: len(r.context["rows"])),
    # /deployments/: the project page's count, plus the paginator's count and "may deploy".
    Budget("/deployments/", 13, lambda r: len(r.context["rows"])),
    Budget("/deployments/{deployment}/", 12, detail_rows),
    Budget("/api/v1/deployments/", 6, lambda r: len(r.json()["results"])),
    # The API shows the newest REVISIONS_SHOWN (10) revisions: still more than the budget.
    Budget("/api/v1/deployments/{deployment}/", 7, lambda r: len(r.json()["revisions"]), at_least=REVISIONS_SHOWN),
    Budget("/api/v1/deployments/{deployment}/metrics/", 5, lambda r: len(r.json()["revisions"])),
]


@pytest.fixture
def crowd(ada: User, lin: User, project: Project, fake_serving: FakeServing) -> dict[str, int]:
    """ROWS deployments of demo/demo, each of its own model (an alias each in the history)
    with a serving and a warm revision; one deployment with ROWS revisions that served in
    the last hour (requests fed to the fake), ROWS timeline events and ROWS serving keys.
    Every deployment and revision names an environment (a team's own: its label reads the
    team), so reading one per row would show."""
    now = timezone.now()
    env = Environment.objects.create(team=project.team, name="sklearn-1.7", state=EnvironmentState.READY)
    deployments = []
    for i in range(ROWS):
        model = RegisteredModel.objects.create(name=f"model-{i:02d}", project=project)
        AliasHistory.objects.create(model=model, alias="champion", version=2)
        deployment = Deployment.objects.create(
            project=project,
            name=f"api-{i:02d}",
            model_name=model.name,
            backend="local",
            created_by=ada if i % 2 else lin,
            status=DeploymentStatus.SERVING,
            environment=env,
        )
        Revision.objects.create(
            deployment=deployment, number=1, version=1, status=RevisionStatus.READY, serving_at=now, environment=env
        )
        serving = Revision.objects.create(
            deployment=deployment,
            number=2,
            version=2,
            status=RevisionStatus.SERVING,
            traffic=100,
            serving_at=now,
            environment=env,
        )
        fake_serving.feed(serving, 200, 10.0, count=3)
        deployments.append(deployment)
    detailed = deployments[0]
    for k in range(3, ROWS + 3):
        revision = Revision.objects.create(
            deployment=detailed,
            number=k,
            version=k,
            status=RevisionStatus.RETIRED,
            created_by=ada,
            retired_at=now - timedelta(minutes=1),
            environment=env,
        )
        fake_serving.feed(revision, 200, 5.0 + k, at=now - timedelta(minutes=5))
        RolloutEvent.objects.create(
            deployment=detailed, revision=revision, step=RolloutStep.STARTED, actor=[ada, lin, None][k % 3]
        )
        ServingKey.objects.create(
            deployment=detailed,
            name=f"key-{k}",
            prefix=f"plsk_{k:06d}",
            digest=f"{k:064d}",
            created_by=[ada, lin][k % 2],
        )
    return {"deployment": detailed.pk}


@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_list_stays_within_its_query_budget(
    budget: Budget, lin: User, crowd: dict[str, int], django_assert_max_num_queries: Any
) -> None:
    assert budget.max_queries < ROWS, "a budget this high would let a query per row through"
    fresh = User.objects.get(pk=lin.pk)
    client = api_for(fresh) if budget.is_api else client_for(fresh)
    with django_assert_max_num_queries(budget.max_queries):
        response = client.get(budget.url.format(**crowd))
    assert response.status_code == 200
    assert budget.at_least > budget.max_queries
    assert budget.rows(response) >= budget.at_least, f"{budget} listed too few rows to expose a query per row"
