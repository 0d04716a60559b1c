"""The issue's real test: a local launch that imports cowsay (not installed in the portal)
succeeds in a really built environment that has it, and fails with the import error in the
default `portal` environment; the launch and its MLflow run (a real server) name the
environment. The build is the session's real one (tests/environments/conftest.py: uv,
`cowsay==6.1` over the portal's packages); the job runs through the real local runner."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.environments.models import Environment
from apps.launches import tasks
from apps.launches.models import TERMINAL, Launch, Status
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for
from tests.environments.conftest import built_cowsay_env, cowsay_venv  # noqa: F401  (fixtures)
from tests.launches.conftest import make_template

pytestmark = [pytest.mark.network, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

IMPORT_COWSAY = "import cowsay, os; print('imported', cowsay.__name__); print('venv', os.environ.get('VIRTUAL_ENV'))"


def finished(launch: Launch, seconds: float = 90) -> Launch:
    """Run the reconciler (as beat would) until the launch ends."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tasks.sync_launches()
        launch.refresh_from_db()
        if launch.status in TERMINAL:
            return launch
        time.sleep(0.2)
    pytest.fail(f"launch {launch.pk} still {launch.status}: {launch.status_reason}")


def launch(user: User, **body: Any) -> Launch:
    response = api_for(user).post(
        "/api/v1/launches/", {"project": "demo/demo", "template": "cowsay", **body}, format="json"
    )
    assert response.status_code == 201, response.json()
    return Launch.objects.get(pk=response.json()["id"])


def tags(mlflow: str, run_id: str) -> dict[str, str]:
    run = MlflowGateway(mlflow).get_run(run_id)
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def test_a_launch_imports_the_extra_package_only_in_the_environment_that_has_it(
    ada: User,
    team: Team,
    project: Project,
    built_cowsay_env: Environment,  # noqa: F811
    data_dir: Path,
    eager_tasks: None,
    mlflow_up: str,
) -> None:
    Project.objects.filter(pk=project.pk).update(backend="local")
    make_template(team, "cowsay", ["python", "-c", IMPORT_COWSAY], backends=["local"])

    inside = finished(launch(ada, environment=built_cowsay_env.label))

    assert inside.status == Status.SUCCEEDED, inside.status_reason
    assert inside.environment_id == built_cowsay_env.pk
    output = (data_dir / "launches" / str(inside.pk) / "output.log").read_text()
    assert "imported cowsay" in output
    assert built_cowsay_env.build is not None
    assert f"venv {Path(built_cowsay_env.build.python).parent.parent}" in output
    assert tags(mlflow_up, inside.mlflow_run_id)["plinth.environment"] == "with-cowsay:1"
    assert tags(mlflow_up, inside.mlflow_run_id)["plinth.environment.packages"] == "cowsay==6.1"

    outside = finished(launch(ada))  # the project's default: the platform's, the portal's interpreter

    assert outside.environment is not None and outside.environment.label == "portal:1"
    assert outside.status == Status.FAILED
    assert "ModuleNotFoundError: No module named 'cowsay'" in outside.status_reason
    assert tags(mlflow_up, outside.mlflow_run_id)["plinth.environment"] == "portal:1"
    assert tags(mlflow_up, outside.mlflow_run_id)["plinth.environment.packages"] == "portal"
    detail = api_for(ada).get(f"/api/v1/launches/{outside.pk}/").json()
    assert detail["environment"] == "portal:1"
