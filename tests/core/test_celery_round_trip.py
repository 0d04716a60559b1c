"""A real Celery round trip: tasks go through the configured broker (the filesystem
transport by default, Redis in CI) to a worker started here, and their effects land in the
database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from apps.accounts.models import User
from apps.core.models import WorkerHeartbeat
from apps.core.tasks import heartbeat
from apps.projects.models import ExperimentState, Project
from portal.celery import app
from tests.conftest import api_for

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker() -> Iterator[Any]:
    app.control.purge()  # messages left over from other tests must not run against this database
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20
    ) as running:
        yield running


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_task_sent_through_the_broker_runs_on_the_worker(worker: Any) -> None:
    assert not WorkerHeartbeat.objects.exists()
    heartbeat.delay()
    assert wait_for(lambda: WorkerHeartbeat.objects.exists()), f"no worker answered via {settings.CELERY_BROKER_URL}"


@pytest.mark.mlflow
def test_creating_a_project_links_its_experiment_through_the_worker(worker: Any, lin: User, mlflow_up: str) -> None:
    response = api_for(lin).post("/api/v1/projects/", {"team": "demo", "slug": "nlp", "name": "NLP"}, format="json")
    assert response.status_code == 201
    project = Project.objects.get(pk=response.json()["id"])

    def linked() -> bool:
        project.refresh_from_db()
        return project.mlflow_state == ExperimentState.LINKED

    assert wait_for(linked), f"experiment not linked: {project.mlflow_state} {project.mlflow_error}"
    assert project.mlflow_experiment_id
