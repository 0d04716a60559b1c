"""The rollout end to end with real processes: a real `mlflow server`, three versions of a
scikit-learn digits classifier registered in it (two good ones with their input example,
one pyfunc that cannot load), MLflow's own scoring server per revision (the local backend)
and the inference gateway in front.

A deployment follows `champion`: its predictions through the gateway equal
`mlflow.pyfunc.load_model(...).predict` on the same rows; approving a promotion of version
2 rolls it out (the canary's share observed over 200 requests, then 100 %); the manual
rollback returns to version 1 at once; the broken version fails its pre-flight and never
gets a request; deleting the deployment leaves no model-server process behind."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db.models import F
from django.test import Client

from apps.accounts import services as account_services
from apps.accounts.models import User
from apps.core.guard import group_members
from apps.deployments import gateway, rollout, services, stats
from apps.deployments.examples import NoInputExample, input_example
from apps.deployments.models import Deployment, DeploymentStatus, RequestStats, Revision, RevisionStatus
from apps.deployments.serving.local import ServerRecord, revision_dir, stop_all_model_servers
from apps.projects.models import ExperimentState, Project
from apps.registry.models import PROJECT_TAG, RegisteredModel
from apps.registry.tasks import apply_promotion
from tests.conftest import api_for

pytestmark = [pytest.mark.mlflow, pytest.mark.django_db]

SETTLE_SECONDS = 240.0  # a model server may take this long to answer on a busy machine


@dataclass(frozen=True)
class Digits:
    """Model `name` in the test MLflow server: versions 1 and 2 (good, with their input
    example), 3 (a pyfunc whose loading fails); `rows` to predict on, in split orientation."""

    name: str
    rows: Any  # a pandas DataFrame
    experiment_id: str


@pytest.fixture(scope="module")
def digits(mlflow_server: str) -> Digits:
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    features, target = load_digits(return_X_y=True, as_frame=True)
    features, target = features[:400], target[:400]  # enough to learn, quick to fit on a busy machine
    name = f"digits-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server)
    # An experiment of its own: the session's MLflow server is shared, and a "demo/demo"
    # without Plinth's tags would make every later test's demo project refuse to link.
    experiment = mlflow.set_experiment(f"deployments-e2e-{name}")
    # Version 2 learns the next digit's label, so that every answer tells which version served it.
    for labels in (target, (target + 1) % 10):
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                LogisticRegression(max_iter=500).fit(features, labels),
                name="model",
                input_example=features.head(2),
                registered_model_name=name,
                pip_requirements=["scikit-learn"],  # served in this environment: no inference needed
            )

    class CannotLoad(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def load_context(self, context: Any) -> None:
            raise RuntimeError("weights.bin is missing: this model cannot load")

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=CannotLoad(), registered_model_name=name, pip_requirements=["mlflow"]
        )
    mlflow.MlflowClient().set_registered_model_tag(name, PROJECT_TAG, "demo/demo")
    return Digits(name, features.sample(12, random_state=7), experiment.experiment_id)


@pytest.fixture
def serving_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.DATA_DIR = tmp_path
    # A block of ports of its own: model servers of other test runs on this host listen on
    # the default range, and one answering on a port ours meant to take would be called.
    first = random.Random().randrange(20000, 60000, 100)
    settings.PLINTH_SERVING_PORTS = f"{first}-{first + 99}"
    gateway.clear_routes()
    stats.discard()
    yield tmp_path
    stop_all_model_servers()  # whatever a failing test left running


@pytest.fixture
def quiet_tasks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """No broker: the tasks that services send are recorded (reconciles) or dropped."""
    sent: list[int] = []
    monkeypatch.setattr("apps.deployments.tasks.reconcile_deployment.delay", lambda pk, *a, **k: sent.append(pk))
    monkeypatch.setattr("apps.registry.tasks.apply_promotion.delay", lambda pk: None)
    monkeypatch.setattr("apps.notifications.tasks.deliver.delay", lambda pk: None)
    return sent


def settle(deployment: Deployment, done: Callable[[], bool], what: str, failure_expected: bool = False) -> None:
    """Run reconcile passes (as beat would) until `done()`; fail with the timeline if it
    does not happen within SETTLE_SECONDS, or at once when a revision fails unexpectedly."""
    deadline = time.monotonic() + SETTLE_SECONDS
    failed = Revision.objects.filter(deployment=deployment, status=RevisionStatus.FAILED)
    failed_before = failed.count()
    while not done():
        if time.monotonic() > deadline or (not failure_expected and failed.count() > failed_before):
            timeline = list(deployment.events.order_by("at").values_list("step", "message"))
            pytest.fail(f"{what} did not happen: {revisions(deployment)} {timeline}")
        rollout.reconcile(deployment.pk)
        time.sleep(0.2)


def revisions(deployment: Deployment) -> dict[int, tuple[int, str, int]]:
    return {r.number: (r.version, r.status, r.traffic) for r in Revision.objects.filter(deployment=deployment)}


def rev(deployment: Deployment, number: int) -> Revision:
    return Revision.objects.get(deployment=deployment, number=number)


class Caller:
    """Ada calling the gateway with her API token."""

    def __init__(self, user: User, rows: Any) -> None:
        self.auth = {"Authorization": f"Bearer {account_services.create_api_token(user, name='e2e')[1]}"}
        self.body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
        self.client = Client()

    def call(self) -> tuple[int, list[Any]]:
        """(model version that answered, predictions)."""
        response = self.client.post(
            "/serve/demo/demo/digits/invocations", data=self.body, content_type="application/json", headers=self.auth
        )
        assert response.status_code == 200, response.content
        return int(response["X-Plinth-Model-Version"]), response.json()["predictions"]


def expected(digits: Digits, version: int) -> list[int]:
    import mlflow.pyfunc

    return [int(x) for x in mlflow.pyfunc.load_model(f"models:/{digits.name}/{version}").predict(digits.rows)]


def test_a_deployment_follows_champion_through_canary_promotion_rollback_and_a_broken_version(
    digits: Digits,
    mlflow_up: str,
    serving_dir: Path,
    quiet_tasks: list[int],
    project: Project,
    ada: User,
    lin: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_up)
    client = mlflow.MlflowClient()
    Project.objects.filter(pk=project.pk).update(
        mlflow_experiment_id=digits.experiment_id, mlflow_state=ExperimentState.LINKED
    )
    RegisteredModel.objects.create(name=digits.name, project=project)
    client.set_registered_model_alias(digits.name, "champion", "1")
    v1, v2 = expected(digits, 1), expected(digits, 2)
    assert v2 == [(p + 1) % 10 for p in v1]

    deployment = services.create_deployment(
        ada, project, name="digits", model=digits.name, canary_percent=10, canary_minutes=60
    )
    caller = Caller(ada, digits.rows)

    # First deploy: pre-flight on the model's own serving_input_example.json, then 100 %.
    settle(deployment, lambda: rev_status(deployment, 1) == RevisionStatus.SERVING, "the first revision serving")
    assert "answered 200" in deployment.events.get(step="preflight_passed").message
    assert caller.call() == (1, v1)

    # A promotion of version 2 is approved and applied: the deployment's reconcile is sent.
    asked = api_for(ada).post(
        "/api/v1/promotions/",
        {"model": digits.name, "version": 2, "alias": "champion", "justification": "a smaller model"},
        format="json",
    )
    assert asked.status_code == 201, asked.content
    pk = asked.json()["id"]
    assert api_for(lin).post(f"/api/v1/promotions/{pk}/approve/").json()["status"] == "approved"
    quiet_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert apply_promotion(pk) == "applied"
    assert quiet_tasks == [deployment.pk]

    # The canary: 10 % of 200 requests (within ±10 points), each answered by its version.
    settle(deployment, lambda: revisions(deployment).get(2, (0, "", 0))[2] == 10, "the canary")
    gateway.clear_routes()
    answered: Counter[int] = Counter()
    for _ in range(200):
        version, predictions = caller.call()
        assert predictions == (v1 if version == 1 else v2)
        answered[version] += 1
    assert set(answered) == {1, 2}
    assert abs(answered[2] / 200 * 100 - 10) <= 10, answered
    stats.flush()

    # The canary's time is up (moved back rather than waited for): promoted on its numbers.
    Revision.objects.filter(pk=rev(deployment, 2).pk).update(
        canary_started_at=F("canary_started_at") - timedelta(minutes=61)
    )
    settle(deployment, lambda: revisions(deployment)[2][2] == 100, "the promotion")
    promoted = deployment.events.get(step="promoted", revision__number=2).message
    assert f"canary 5xx rate 0.00 (0 of {answered[2]})" in promoted
    assert revisions(deployment) == {1: (1, RevisionStatus.READY, 0), 2: (2, RevisionStatus.SERVING, 100)}
    gateway.clear_routes()
    assert {caller.call()[0] for _ in range(20)} == {2}

    # One click back: version 1 was kept warm, so it serves at once.
    services.rollback_deployment(lin, deployment)
    gateway.clear_routes()
    assert [caller.call() for _ in range(20)] == [(1, v1)] * 20
    retired = ServerRecord.read(revision_dir(rev(deployment, 2)))
    assert retired is not None
    settle(deployment, lambda: rev(deployment, 2).retired_at is not None, "the rolled-back revision stopping")
    assert group_members(retired.pid) == []

    # A version that cannot load fails its pre-flight and never receives a request.
    client.set_registered_model_alias(digits.name, "champion", "3")
    settle(
        deployment,
        lambda: rev_status(deployment, 3) == RevisionStatus.FAILED,
        "the pre-flight failure",
        failure_expected=True,
    )
    broken = rev(deployment, 3)
    assert "weights.bin is missing" in broken.reason
    assert broken.traffic == 0 and broken.serving_at is None and broken.canary_started_at is None
    gateway.clear_routes()
    assert [caller.call()[0] for _ in range(10)] == [1] * 10
    stats.flush()
    assert not RequestStats.objects.filter(revision=broken).exists()
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.SERVING

    # Deleting it: every model-server process is gone afterwards.
    records = [ServerRecord.read(revision_dir(r)) for r in Revision.objects.filter(deployment=deployment)]
    services.delete_deployment(lin, deployment)
    assert rollout.reconcile(deployment.pk) == "deleted"
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    for record in records:
        assert record is None or group_members(record.pid) == []


def rev_status(deployment: Deployment, number: int) -> str:
    found = Revision.objects.filter(deployment=deployment, number=number).values_list("status", flat=True).first()
    return str(found or "")


def test_the_input_example_is_the_one_mlflow_logged_with_the_version(
    digits: Digits, mlflow_up: str, project: Project, ada: User
) -> None:
    deployment = Deployment(project=project, name="x", model_name=digits.name, created_by=ada)
    logged = json.loads(input_example(deployment, 1))
    assert logged["dataframe_split"]["columns"][:2] == ["pixel_0_0", "pixel_0_1"]
    assert len(logged["dataframe_split"]["data"]) == 2
    with pytest.raises(NoInputExample, match="no input example: give one on the deployment"):
        input_example(deployment, 3)  # logged without one
    deployment.input_example = {"inputs": [[0.5] * 64]}
    assert json.loads(input_example(deployment, 3)) == {"inputs": [[0.5] * 64]}
