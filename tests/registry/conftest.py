"""Fixtures of the registry tests: more people (a second lead, a second member), a fake
registry for the rules, and models registered in the real MLflow server for the flows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User
from apps.projects.models import ExperimentState, Project
from apps.registry.mlflow import MlflowError
from portal.celery import app
from tests.conftest import make_user
from tests.registry.fakes import FakeRegistry, install


@pytest.fixture
def lin2(team: Team) -> User:
    """A second lead of demo (a quorum of 2 needs two different leads)."""
    user = make_user("lin2")
    Membership.objects.create(team=team, user=user, role=Role.LEAD)
    return user


@pytest.fixture
def bea(team: Team) -> User:
    """A second member of demo: someone whose request ada (a member) cannot decide."""
    user = make_user("bea")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch, project: Project) -> FakeRegistry:
    """MLflow's registry as a stateful fake, with model `digits` of demo/demo: version 1
    (accuracy 0.90) and version 2 (accuracy 0.95), made from runs in demo/demo's experiment
    (the fake's runs live in experiment "1", which demo/demo is linked to)."""
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    project.refresh_from_db()
    fake = install(monkeypatch)
    fake.add_model("digits", "demo/demo", [{"accuracy": 0.90, "f1": 0.89}, {"accuracy": 0.95, "f1": 0.94}])
    return fake


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """`.delay()` runs the task at once, in this thread (no broker, no worker)."""
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = before


class Registered:
    """Models registered in the real MLflow server with the plain MLflow client, as a
    training script (or someone outside Plinth) would."""

    def __init__(self, server: str) -> None:
        from mlflow import MlflowClient

        self.server = server
        self.client = MlflowClient(tracking_uri=server, registry_uri=server)

    def model(self, project: str | None, versions: list[dict[str, float]], prefix: str = "m") -> str:
        """A new registered model (a unique name) tagged with `project`, one version per
        metrics dict, each from its own finished run in experiment `project`."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        tags = {"plinth.project": project} if project else {}
        self.client.create_registered_model(name, tags=tags)
        for metrics in versions:
            self.version(name, metrics, experiment=project or "outside")
        return name

    def version(self, name: str, metrics: dict[str, float], experiment: str = "outside") -> int:
        found = self.client.get_experiment_by_name(experiment)
        team_slug, _, slug = experiment.partition("/")
        # Tagged as Plinth tags the experiment it creates for project team/slug, and that
        # project (if any) linked to it by id, as Plinth's link task would have.
        experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(experiment, tags={"plinth.team": team_slug, "plinth.project": slug})
        )
        Project.objects.filter(team__slug=team_slug, slug=slug).exclude(mlflow_experiment_id=experiment_id).update(
            mlflow_experiment_id=experiment_id, mlflow_state=ExperimentState.LINKED
        )
        run = self.client.create_run(experiment_id)
        for key, value in metrics.items():
            self.client.log_metric(run.info.run_id, key, value)
        self.client.set_terminated(run.info.run_id)
        made = self.client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        return int(made.version)

    def alias(self, name: str, alias: str) -> int | None:
        """What MLflow's own client reads for `alias` (None when it is not set)."""
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except (MlflowException, MlflowError):
            return None


@pytest.fixture
def registered(mlflow_up: str) -> Registered:
    return Registered(mlflow_up)
