"""The requirements pre-flight for real: a scikit-learn model logged in a real `mlflow
server` with one extra pip requirement the portal lacks (`cowsay==6.1`; MLflow infers and
pins the rest: mlflow, scikit-learn, cloudpickle …), deployed on the local backend.

In the portal's own environment its revision fails before anything runs — the reason names
cowsay, no model was downloaded, no model server started, no request routed to it. In
`with-cowsay:1` (a real venv built by apps.environments.builder over the portal's packages)
the same version passes, is served by MLflow's scoring server running on that venv's
interpreter, and answers predictions through the gateway."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.accounts import services as account_services
from apps.accounts.models import User
from apps.core.guard import group_members
from apps.deployments import rollout, services
from apps.deployments.models import Deployment, DeploymentStatus, RequestStats, Revision, RevisionStatus
from apps.deployments.serving.local import ServerRecord, revision_dir
from apps.environments.models import Environment
from apps.projects.models import ExperimentState, Project
from apps.registry.models import PROJECT_TAG, RegisteredModel
from tests.deployments.test_rollout_e2e import quiet_tasks, serving_dir  # noqa: F401  (fixtures)
from tests.environments.conftest import built_cowsay_env, cowsay_venv  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.mlflow, pytest.mark.network, pytest.mark.django_db]

SETTLE_SECONDS = 240.0


@dataclass(frozen=True)
class CowsayModel:
    name: str
    experiment_id: str
    rows: Any  # a pandas DataFrame
    requirements: list[str]


@pytest.fixture(scope="module")
def cowsay_model(mlflow_server: str) -> CowsayModel:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    name = f"cowsay-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    experiment = mlflow.set_experiment(f"deployments-env-e2e-{name}")
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            LogisticRegression(max_iter=300).fit(features, target),
            name="model",
            input_example=features.head(2),
            registered_model_name=name,
            extra_pip_requirements=["cowsay==6.1"],
        )
    mlflow.MlflowClient().set_registered_model_tag(name, PROJECT_TAG, "demo/demo")
    text = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1/requirements.txt")).read_text()
    return CowsayModel(name, experiment.experiment_id, features.sample(5, random_state=3), text.splitlines())


def settle(deployment: Deployment, done: Any, what: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not done():
        if time.monotonic() > deadline:
            timeline = list(deployment.events.order_by("at").values_list("step", "message"))
            states = list(deployment.revisions.values_list("number", "status", "reason"))
            pytest.fail(f"{what} did not happen: {states} {timeline}")
        rollout.reconcile(deployment.pk)
        time.sleep(0.2)


def status_of(deployment: Deployment, number: int) -> str:
    return str(Revision.objects.filter(deployment=deployment, number=number).values_list("status", flat=True).first())


def test_a_model_needing_a_package_the_environment_lacks_is_refused_and_served_in_one_that_has_it(
    cowsay_model: CowsayModel,
    built_cowsay_env: Environment,  # noqa: F811
    mlflow_up: str,
    serving_dir: Path,  # noqa: F811
    quiet_tasks: list[int],  # noqa: F811
    project: Project,
    ada: User,
) -> None:
    import mlflow

    assert "cowsay==6.1" in cowsay_model.requirements
    assert any(line.startswith("mlflow==") for line in cowsay_model.requirements)  # MLflow pinned its own too
    mlflow.set_tracking_uri(mlflow_up)
    Project.objects.filter(pk=project.pk).update(
        mlflow_experiment_id=cowsay_model.experiment_id, mlflow_state=ExperimentState.LINKED
    )
    RegisteredModel.objects.create(name=cowsay_model.name, project=project)

    # In the portal's environment (the platform default): refused before anything runs.
    portal = services.create_deployment(ada, project, name="cow-portal", model=cowsay_model.name, version=1)
    settle(portal, lambda: status_of(portal, 1) == RevisionStatus.FAILED, "the pre-flight failure")
    refused = Revision.objects.select_related("environment").get(deployment=portal, number=1)
    assert refused.environment is not None and refused.environment.is_portal
    assert refused.reason == (
        "pre-flight failed: The environment portal:1 does not meet the model's requirements: "
        "cowsay (==6.1) is not installed."
    )
    assert (refused.traffic, refused.serving_at, refused.endpoint, refused.pid) == (0, None, "", None)
    folder = revision_dir(refused)
    assert not (folder / "pid").exists() and not (folder / "model").exists()  # never fetched, never started
    assert not RequestStats.objects.filter(revision=refused).exists()
    portal.refresh_from_db()
    assert portal.status == DeploymentStatus.FAILED and "cowsay" in portal.status_reason

    # The same version in with-cowsay:1: passes, runs on that venv's interpreter, answers.
    served = services.create_deployment(
        ada, project, name="cow", model=cowsay_model.name, version=1, environment=built_cowsay_env.pk
    )
    settle(served, lambda: status_of(served, 1) == RevisionStatus.SERVING, "serving in with-cowsay:1")
    revision = Revision.objects.get(deployment=served, number=1)
    assert revision.environment_id == built_cowsay_env.pk
    record = ServerRecord.read(revision_dir(revision))
    assert record is not None
    python = built_cowsay_env.build.python if built_cowsay_env.build else ""
    commands = [_cmdline(pid) for pid in group_members(record.pid)]
    assert any(c[:3] == [python, "-m", "uvicorn"] for c in commands), commands  # the scoring server's process

    token = account_services.create_api_token(ada, name="e2e")[1]
    body = json.dumps({"dataframe_split": json.loads(cowsay_model.rows.to_json(orient="split", index=False))})
    answer = Client().post(
        "/serve/demo/demo/cow/invocations",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.content
    assert len(answer.json()["predictions"]) == 5
    assert services.delete_deployment(ada, served).status == DeploymentStatus.DELETING
    settle(served, lambda: not Deployment.objects.filter(pk=served.pk).exists(), "the deletion")
    assert group_members(record.pid) == []


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []
