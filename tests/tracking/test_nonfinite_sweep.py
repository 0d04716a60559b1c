"""A sweep's "best so far" over trials that logged NaN or +inf (which MLflow answers as its
1.797e308 sentinel): the best is the best finite trial, and the table shows NaN/inf."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import Team, User
from apps.launches.models import Launch, Sweep
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for, client_for
from tests.launches.conftest import (
    FakeBackend,
    FakeMlflow,
    eager_tasks,
    fake_backend,
    fake_mlflow,
    linked_project,
    make_template,
)

# Fixtures of the launches tests, used here.
__all__ = ["eager_tasks", "fake_backend", "fake_mlflow", "linked_project"]

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("direction", ["max", "min"])
def test_best_so_far_is_the_best_finite_trial(
    direction: str,
    ada: User,
    team: Team,
    linked_project: Project,
    fake_mlflow: FakeMlflow,
    fake_backend: FakeBackend,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_template(
        team, "train", ["python", "train.py"], parameters={"epochs": {"type": "int", "default": 1, "min": 1, "max": 9}}
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(
            "/api/v1/sweeps/",
            {
                "project": "demo/demo",
                "template": "train",
                "strategy": "grid",
                "space": {"epochs": [1, 2, 3, 4]},
                "max_trials": 4,
                "parallelism": 4,
                "metric": "acc",
                "direction": direction,
            },
            format="json",
        )
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get(pk=response.json()["id"])
    trials = list(Launch.objects.filter(sweep=sweep).order_by("id"))
    assert len(trials) == 4
    # As MLflow's REST answer spells them: +inf as its sentinel, -inf likewise, NaN as a string.
    values: list[Any] = [1.7976931348623157e308, "NaN", 0.5, -1.7976931348623157e308]
    if direction == "min":
        values[2] = 0.25
    runs = [
        {"info": {"run_id": t.mlflow_run_id}, "data": {"metrics": [{"key": "acc", "value": v}]}}
        for t, v in zip(trials, values, strict=True)
    ]
    monkeypatch.setattr(MlflowGateway, "search_runs", lambda self, *a, **k: (runs, ""))

    page = client_for(ada).get(reverse("launches:sweep-detail", args=[sweep.pk]))
    assert page.status_code == 200
    best = page.context["best"]
    assert best is not None and best[1].pk == trials[2].pk
    html = page.content.decode()
    assert "1.7976931348623157e+308" not in html
    assert "<td>inf</td>" in html and "<td>NaN</td>" in html and "<td>-inf</td>" in html
