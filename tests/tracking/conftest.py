"""Fixtures of the tracking tests: runs logged into the real MLflow server with the plain
MLflow client (as people's own scripts do, not through Plinth), one experiment per test
module, and demo/demo linked to it; or a FakeMlflow where no server is needed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from apps.projects.models import ExperimentState, Project
from tests.tracking.fakes import FakeMlflow

STEPS = 30


@dataclass(frozen=True)
class Seeded:
    """An experiment with `runs` (names run-00, run-01, ...) in the real server."""

    experiment_id: str
    runs: dict[str, str]  # name -> run id
    client: MlflowClient

    def run_id(self, index: int) -> str:
        return self.runs[f"run-{index:02d}"]


def loss_curve(index: int, steps: int = STEPS) -> list[float]:
    return [round(1 / (1 + step) + index * 0.01, 6) for step in range(steps)]


def log_run(client: MlflowClient, experiment_id: str, index: int, *, finish: bool = True) -> str:
    """One run as a training script logs it: params, a loss history, a final accuracy."""
    now = int(time.time() * 1000)
    run = client.create_run(experiment_id, run_name=f"run-{index:02d}")
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("loss", value, now + step, step) for step, value in enumerate(loss_curve(index))]
        + [Metric("accuracy", 0.5 + index * 0.03, now, 0)],
        params=[
            Param("lr", ["0.1", "0.01", "0.001"][index % 3]),
            Param("optimizer", ["adam", "sgd"][index % 2]),
            Param("depth", str(index)),
        ],
        tags=[RunTag("mlflow.user", "grace" if index % 2 else "alan")],
    )
    if finish:
        client.set_terminated(run_id)
    return run_id


def new_experiment(client: MlflowClient, label: str) -> str:
    return str(client.create_experiment(f"tests/{label}/{uuid.uuid4().hex[:8]}"))


def link(project: Project, experiment_id: str) -> Project:
    Project.objects.filter(pk=project.pk).update(
        mlflow_experiment_id=experiment_id, mlflow_state=ExperimentState.LINKED
    )
    project.refresh_from_db()
    return project


@pytest.fixture(scope="module")
def mlflow_client(mlflow_server: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server)


@pytest.fixture(scope="module")
def seeded(mlflow_client: MlflowClient, request: pytest.FixtureRequest) -> Seeded:
    """12 finished runs in an experiment of this test module."""
    experiment_id = new_experiment(mlflow_client, request.module.__name__)
    runs = {f"run-{i:02d}": log_run(mlflow_client, experiment_id, i) for i in range(12)}
    return Seeded(experiment_id, runs, mlflow_client)


@pytest.fixture
def linked(project: Project, seeded: Seeded, mlflow_up: str) -> Project:
    """demo/demo on the seeded experiment, the portal pointed at the real server."""
    return link(project, seeded.experiment_id)


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
    return FakeMlflow().install(monkeypatch)


def series_of(body: dict[str, Any], key: str, run_id: str) -> tuple[list[int], list[float]]:
    found = body["series"][key][run_id]
    return found["steps"], found["values"]
