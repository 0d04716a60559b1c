"""Twenty people click Launch at the same moment for the last GPUs of a project: the row
lock on the project lets exactly as many through as the quota allows, and the rest get a
409. This needs real row locks, so it runs on PostgreSQL (CI) and is skipped on SQLite
(a failure when PLINTH_REQUIRE_POSTGRES=1, as CI sets)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.launches import services
from apps.launches.models import Launch, Template
from apps.projects.models import ExperimentState, Project
from tests.conftest import api_for
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres(
        "needs real row locks (SELECT ... FOR UPDATE): run with DATABASE_URL=postgres://... as CI does"
    ),
]

REQUESTS = 20
QUOTA = 3


@pytest.fixture
def gpu_project(team: Team) -> Project:
    return Project.objects.create(
        team=team,
        slug="gpu",
        name="GPU project",
        gpu_quota=QUOTA,
        backend="kubernetes",
        namespace="plinth-demo-gpu",
        mlflow_experiment_name="demo/gpu",
        mlflow_state=ExperimentState.LINKED,
        mlflow_experiment_id="11",
    )


@pytest.fixture
def gpu_template(team: Team) -> Template:
    return make_template(team, "gpu-train", ["python", "train.py"], backends=["kubernetes"], max_resources={"gpus": 1})


def test_concurrent_launches_for_the_last_gpus_never_exceed_the_quota(
    ada: User,
    gpu_project: Project,
    gpu_template: Template,
    fake_mlflow: FakeMlflow,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(services, "enqueue_on_commit", lambda task, *args: queued.append(args[0]))
    create_run = fake_mlflow.create_run

    def slow_create_run(*args: Any, **kwargs: Any) -> str:
        time.sleep(0.02)  # widen the window between the quota check and the insert
        return create_run(*args, **kwargs)

    monkeypatch.setattr(fake_mlflow, "create_run", slow_create_run)

    start = threading.Barrier(REQUESTS + 1)
    done = threading.Event()
    results: list[tuple[int, dict[str, Any]]] = []
    errors: list[BaseException] = []
    most_seen = [0]
    lock = threading.Lock()

    def request() -> None:
        try:
            client = api_for(ada)
            start.wait(timeout=30)
            response = client.post(
                "/api/v1/launches/",
                {"project": "demo/gpu", "template": "gpu-train", "resources": {"gpus": 1}},
                format="json",
            )
            with lock:
                results.append((response.status_code, response.json()))
        except BaseException as exc:  # reported by the main thread
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    def watch() -> None:
        """Sample the committed sum of live GPUs while the requests run."""
        try:
            while not done.is_set():
                most_seen[0] = max(most_seen[0], services.gpus_in_use(gpu_project))
                time.sleep(0.005)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(REQUESTS)]
    watcher = threading.Thread(target=watch)
    for thread in threads:
        thread.start()
    watcher.start()
    start.wait(timeout=30)
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    watcher.join(timeout=10)

    assert not errors, errors
    assert len(results) == REQUESTS
    codes = sorted(code for code, _ in results)
    assert codes.count(201) == QUOTA, results
    assert codes.count(409) == REQUESTS - QUOTA, results
    assert all("quota of 3" in body["detail"] for code, body in results if code == 409)
    assert Launch.objects.filter(project=gpu_project).count() == QUOTA
    assert services.gpus_in_use(gpu_project) == QUOTA
    assert most_seen[0] <= QUOTA
    assert AuditEvent.objects.filter(verb="launch.created").count() == QUOTA
    assert sorted(queued) == sorted(Launch.objects.values_list("pk", flat=True))
    # no MLflow run left behind for a refused request
    assert set(fake_mlflow.runs) == set(Launch.objects.values_list("mlflow_run_id", flat=True))
