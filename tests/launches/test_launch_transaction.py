"""create_launch talks to MLflow outside its transaction: a slow MLflow never holds the
project's row lock, and linking the experiment is its own unit of work, not part of the
launch's."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from apps.accounts.models import Team, User
from apps.launches import services
from apps.launches.models import Launch, Template
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowUnavailable
from tests.launches.conftest import FakeMlflow, make_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"])


def test_the_mlflow_run_is_created_outside_the_launch_transaction(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = len(connection.atomic_blocks)  # the test's own wrapper
    depths: list[int] = []
    create_run = fake_mlflow.create_run

    def watched(*args: Any, **kwargs: Any) -> str:
        depths.append(len(connection.atomic_blocks))
        return create_run(*args, **kwargs)

    monkeypatch.setattr(fake_mlflow, "create_run", watched)
    launch = services.create_launch(ada, linked_project, train)
    assert depths == [outer]
    assert Launch.objects.get(pk=launch.pk).mlflow_run_id in fake_mlflow.runs


def test_a_project_not_yet_linked_is_linked_before_the_launch_transaction(
    ada: User, project: Project, train: Template, fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = len(connection.atomic_blocks)
    depths: list[int] = []
    from apps.projects import services as project_services

    def watched(pk: int) -> Project | None:
        depths.append(len(connection.atomic_blocks))
        linked = Project.objects.get(pk=pk)
        linked.mlflow_state, linked.mlflow_experiment_id = ExperimentState.LINKED, "42"
        linked.save(update_fields=["mlflow_state", "mlflow_experiment_id"])
        return linked

    monkeypatch.setattr(project_services, "link_experiment", watched)
    launch = services.create_launch(ada, project, train)
    assert depths == [outer]
    assert launch.mlflow_experiment_id == "42"


def test_a_launch_refused_under_the_lock_deletes_the_run_it_made(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quota is checked again under the lock (a launch may have committed since the
    first check); a refusal there leaves no MLflow run behind."""
    checks: list[int] = []
    real = services._check_quota

    def second_check_refuses(project: Project, gpus: int) -> None:
        checks.append(gpus)
        if len(checks) == 2:
            raise services.QuotaExceeded("taken meanwhile")
        real(project, gpus)

    monkeypatch.setattr(services, "_check_quota", second_check_refuses)
    with pytest.raises(services.QuotaExceeded):
        services.create_launch(ada, linked_project, train)
    assert len(checks) == 2
    assert fake_mlflow.runs == {}
    assert len(fake_mlflow.deleted) == 1
    assert not Launch.objects.exists()


def test_an_orphan_run_mlflow_would_not_delete_at_once_is_deleted_by_a_task(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    monkeypatch: pytest.MonkeyPatch,
    eager_tasks: None,
) -> None:
    """The request's own delete fails (its MLflow time budget spent): the task retries it."""
    real_check, real_delete = services._check_quota, fake_mlflow.delete_run
    checks: list[int] = []
    attempts: list[str] = []

    def second_check_refuses(project: Project, gpus: int) -> None:
        checks.append(gpus)
        if len(checks) == 2:
            raise services.QuotaExceeded("taken meanwhile")
        real_check(project, gpus)

    def first_delete_fails(run_id: str) -> None:
        attempts.append(run_id)
        if len(attempts) == 1:
            raise MlflowUnavailable("MLflow did not answer in time.")
        real_delete(run_id)

    monkeypatch.setattr(services, "_check_quota", second_check_refuses)
    monkeypatch.setattr(fake_mlflow, "delete_run", first_delete_fails)
    with pytest.raises(services.QuotaExceeded):
        services.create_launch(ada, linked_project, train)
    assert len(attempts) == 2 and attempts[0] == attempts[1]
    assert fake_mlflow.runs == {} and fake_mlflow.deleted == attempts[:1]
    assert not Launch.objects.exists()
