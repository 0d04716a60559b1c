"""Runs say the same word for a state as launches do: a run MLflow calls KILLED is
"Cancelled" on the runs table and the run page, a FINISHED one "Succeeded"."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from apps.accounts.models import User
from apps.projects.models import Project
from tests.conftest import client_for
from tests.tracking.conftest import link, log_run, new_experiment

pytestmark = [pytest.mark.django_db, pytest.mark.mlflow]


def test_a_killed_run_reads_cancelled_like_a_cancelled_launch(
    vic: User, project: Project, mlflow_client: MlflowClient, mlflow_up: str
) -> None:
    experiment_id = new_experiment(mlflow_client, "status-words")
    killed = log_run(mlflow_client, experiment_id, 0, finish=False)
    mlflow_client.set_terminated(killed, status="KILLED")
    finished = log_run(mlflow_client, experiment_id, 1)
    link(project, experiment_id)

    table = client_for(vic).get("/runs/demo/demo/").content.decode()
    assert '<span class="status status-cancelled">Cancelled</span>' in table
    assert '<span class="status status-succeeded">Succeeded</span>' in table
    assert "killed" not in table.lower()
    run_page = client_for(vic).get(f"/runs/demo/demo/{killed}/").content.decode()
    assert "Cancelled" in run_page and ">killed<" not in run_page.lower()
    assert client_for(vic).get(f"/runs/demo/demo/{finished}/").status_code == 200
