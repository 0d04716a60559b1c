"""Query budgets of the registry's list pages and endpoints, measured with more rows (ROWS)
than any budget allows queries, so a query per row (an N+1) cannot fit. Budgets are
today's count + 2; pages count 2 more than their views make (the session and the user).

MLflow's registry is the FakeRegistry here: its calls are not database queries, and the
real server's speed is not what these measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User
from apps.projects.models import Project
from apps.registry.models import AliasHistory, Decision, PromotionRequest, RegisteredModel, Source, Status, Vote
from tests.conftest import api_for, client_for, make_user
from tests.registry.fakes import FakeRegistry, install

ROWS = 25


@dataclass(frozen=True)
class Budget:
    url: str  # "{request}" stands for the id of one of the crowd's requests
    max_queries: int
    rows: Callable[[Any], int] | None  # how many rows the answer lists (None: a page about one object)

    @property
    def is_api(self) -> bool:
        return self.url.startswith("/api/")

    def __str__(self) -> str:
        return self.url


def page_items(response: Any) -> int:
    return len(response.context["page"].object_list)


BUDGETS = [
    Budget("/models/", 10, page_items),  # today 8
    Budget("/models/approvals/", 8, page_items),  # today 6
    Budget("/models/projects/demo/demo/", 12, lambda r: len(r.context["models"])),  # today 10
    # today 11: the model, roles, flags (2), history + its approvals, policy, requests + votes
    Budget("/models/registered/digits/", 13, lambda r: min(len(r.context["history"]), len(r.context["versions"]))),
    Budget("/models/requests/{request}/", 9, None),  # today 7
    Budget("/api/v1/promotions/", 5, lambda r: len(r.json()["results"])),  # today 3
    Budget("/api/v1/promotions/?awaiting=me", 5, lambda r: len(r.json()["results"])),  # today 3
    Budget("/api/v1/models/?project=demo/demo", 6, lambda r: len(r.json()["results"])),  # today 4
    Budget("/api/v1/models/digits/aliases/history/", 5, lambda r: len(r.json())),  # today 3
]


@pytest.fixture
def crowd(team: Team, project: Project, lin: User, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """In demo/demo: ROWS registered models (the fake registry tags them) and `digits` with
    ROWS versions and ROWS history rows, each from a request with its approval; ROWS
    pending requests, each by a different member about a different model, each with an
    approval by a different lead (the policy needs 2). Returns lin, freshly loaded."""
    fake: FakeRegistry = install(monkeypatch)
    people = []
    for i in range(ROWS):
        user = make_user(f"user-{i:02d}")
        Membership.objects.create(team=team, user=user, role=Role.LEAD if i % 2 else Role.MEMBER)
        people.append(user)
    fake.add_model("digits", "demo/demo", [{"accuracy": 0.5 + i / 100, "f1": 0.4 + i / 100} for i in range(ROWS)])
    digits = RegisteredModel.objects.create(name="digits", project=project)
    now = timezone.now()
    start = now - timedelta(days=ROWS)
    for i in range(ROWS):
        fake.add_model(f"model-{i:02d}", "demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.91}])
        fake.models[f"model-{i:02d}"]["aliases"]["champion"] = 2
        model = RegisteredModel.objects.create(name=f"model-{i:02d}", project=project)
        pending = PromotionRequest.objects.create(
            project=project,
            model=model,
            version=1,
            alias="champion",
            justification="why not",
            requested_by=people[i],
            required_approvals=2,
            expires_at=now + timedelta(days=7),
        )
        Vote.objects.create(request=pending, voter=people[(i + 1) % ROWS], decision=Decision.APPROVE)
        applied = PromotionRequest.objects.create(
            project=project,
            model=digits,
            version=i + 1,
            alias="champion",
            justification="history",
            requested_by=people[i],
            status=Status.APPLIED,
            expires_at=now,
            applied_at=start + timedelta(days=i),
        )
        Vote.objects.create(request=applied, voter=people[(i + 3) % ROWS], decision=Decision.APPROVE)
        AliasHistory.objects.create(
            model=digits,
            alias="champion",
            version=i + 1,
            previous_version=i or None,
            valid_from=start + timedelta(days=i),
            valid_to=None if i == ROWS - 1 else start + timedelta(days=i + 1),
            request=applied,
            source=Source.PLINTH,
        )
    return {"lin": User.objects.get(pk=lin.pk), "request": pending.pk}


@pytest.mark.django_db
@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_registry_list_stays_within_its_query_budget(
    budget: Budget, crowd: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    assert budget.max_queries < ROWS, "a budget this high would let a query per row through"
    client = api_for(crowd["lin"]) if budget.is_api else client_for(crowd["lin"])
    with django_assert_max_num_queries(budget.max_queries):
        response = client.get(budget.url.format(request=crowd["request"]))
    assert response.status_code == 200
    if budget.rows is not None:
        assert budget.rows(response) >= ROWS, f"{budget} listed too few rows to expose a query per row"
