"""The local serving backend with real processes: a small scikit-learn model registered in
a real `mlflow server`, served by MLflow's own scoring server (`mlflow models serve`), and
called straight and through the gateway. Also a model that cannot load, a server that
dies, and what is left after stop (nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.accounts import services as account_services
from apps.core.guard import group_members
from apps.deployments import gateway, services, stats
from apps.deployments.models import Deployment, Revision, RevisionStatus
from apps.deployments.serving.base import Probe
from apps.deployments.serving.local import LocalServing, ServerRecord, revision_dir, stop_all_model_servers
from apps.registry.models import RegisteredModel
from tests.core.test_embedded_runner import Runner, migrated, runners  # noqa: F401  (fixtures)
from tests.deployments.conftest import add_revision

START_DEADLINE = 180.0  # seconds a model server may take to answer on a busy machine


@dataclass(frozen=True)
class Registered:
    """A model version in the test MLflow server, with rows to predict on."""

    name: str
    version: int
    rows: Any  # a pandas DataFrame


def _log_model(tracking_uri: str, name: str, log: Callable[[], Any]) -> int:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"serving-{name}")
    with mlflow.start_run():
        info = log()
    return int(info.registered_model_version)


@pytest.fixture(scope="module")
def iris_model(mlflow_server: str) -> Registered:
    """A logistic regression on scikit-learn's iris data, registered as version 1 with its
    input example (so MLflow also logs serving_input_example.json)."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(features, target)
    name = f"iris-{uuid.uuid4().hex[:8]}"
    version = _log_model(
        mlflow_server,
        name,
        lambda: mlflow.sklearn.log_model(
            model, name="model", input_example=features.head(3), registered_model_name=name
        ),
    )
    return Registered(name, version, features.sample(12, random_state=3))


@pytest.fixture(scope="module")
def broken_model(mlflow_server: str) -> Registered:
    """A pyfunc model whose loading fails, as one with a missing dependency does."""
    import mlflow.pyfunc

    class CannotLoad(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def load_context(self, context: Any) -> None:
            raise RuntimeError("weights.bin is missing: this model cannot load")

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    name = f"broken-{uuid.uuid4().hex[:8]}"
    version = _log_model(
        mlflow_server,
        name,
        lambda: mlflow.pyfunc.log_model(name="model", python_model=CannotLoad(), registered_model_name=name),
    )
    return Registered(name, version, None)


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path
    return tmp_path


@pytest.fixture
def backend(data_dir: Path) -> Any:
    made = LocalServing()
    yield made
    stop_all_model_servers()  # whatever a failing test left running


def deployment_of(ada: Any, project: Any, model: Registered) -> Deployment:
    RegisteredModel.objects.create(name=model.name, project=project)
    return services.create_deployment(ada, project, name="api", model=model.name)


def wait_for(backend: LocalServing, revision: Revision, states: set[str]) -> Probe:
    deadline = time.monotonic() + START_DEADLINE
    while True:
        probe = backend.probe(revision)
        if probe.state in states or time.monotonic() > deadline:
            return probe
        time.sleep(0.2)


def predict_json(backend: LocalServing, revision: Revision, rows: Any) -> Any:
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    answer = backend.predict(revision, body)
    assert answer.status == 200, answer.body
    return json.loads(answer.body)["predictions"]


def test_a_revision_is_served_by_mlflows_scoring_server_and_stopped_without_a_trace(
    backend: LocalServing,
    mlflow_up: str,
    ada: Any,
    project: Any,
    iris_model: Registered,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import mlflow.pyfunc
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    # As in make run's worker: no MLflow URI set in the process or its environment (the
    # portal passes its settings explicitly), and a working folder of its own.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    monkeypatch.chdir(tmp_path)

    deployment = deployment_of(ada, project, iris_model)
    revision = add_revision(deployment, iris_model.version, RevisionStatus.STARTING)
    assert backend.probe(revision).state == "gone"

    backend.start(revision)
    revision.refresh_from_db()
    assert revision.pid and revision.port and revision.endpoint == f"http://127.0.0.1:{revision.port}"
    backend.start(revision)  # idempotent: the same server
    assert Revision.objects.get(pk=revision.pk).pid == revision.pid

    probe = wait_for(backend, revision, {"up", "failed", "crashed"})
    assert probe.state == "up", backend.logs(revision)
    assert probe.endpoint == revision.endpoint
    assert (revision_dir(revision) / "model" / "MLmodel").exists()

    # The same predictions as the registered model loaded here.
    mlflow.set_tracking_uri(mlflow_up)
    expected = mlflow.pyfunc.load_model(f"models:/{iris_model.name}/{iris_model.version}").predict(iris_model.rows)
    assert predict_json(backend, revision, iris_model.rows) == [int(x) for x in expected]

    # The server sees none of the portal's secrets.
    environ = Path(f"/proc/{revision.pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not {n for n in names if n.startswith(("PLINTH_", "DATABASE", "MLFLOW_TRACKING", "DJANGO"))}
    assert "PATH" in names

    members = group_members(revision.pid)
    assert len(members) >= 2  # MLflow's CLI and the uvicorn server it started
    backend.stop(revision)
    assert group_members(revision.pid) == []
    assert not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in members)
    assert backend.probe(revision).state == "gone"
    assert Revision.objects.get(pk=revision.pk).pid is None
    backend.stop(revision)  # idempotent


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_server_that_dies_is_reported_crashed_and_comes_back_on_start(
    backend: LocalServing, mlflow_up: str, ada: Any, project: Any, iris_model: Registered
) -> None:
    deployment = deployment_of(ada, project, iris_model)
    revision = add_revision(deployment, iris_model.version, RevisionStatus.SERVING, traffic=100)
    backend.start(revision)
    revision.refresh_from_db()
    assert wait_for(backend, revision, {"up", "failed", "crashed"}).state == "up", backend.logs(revision)
    first = ServerRecord.read(revision_dir(revision))
    assert first is not None

    os.killpg(first.pid, signal.SIGKILL)
    crashed = wait_for(backend, revision, {"crashed", "failed", "gone"})
    assert crashed.state == "crashed"
    assert str(first.pid) in crashed.message

    backend.start(revision)  # what the reconciler does on "crashed"
    revision.refresh_from_db()
    assert revision.pid != first.pid
    assert wait_for(backend, revision, {"up", "failed", "crashed"}).state == "up", backend.logs(revision)

    # Through the gateway: the predictions, and MLflow's own message for bad input.
    gateway.clear_routes()
    stats.discard()
    key = account_services.create_api_token(ada, name="serving test")[1]
    url = "/serve/demo/demo/api/invocations"
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    rows = json.loads(iris_model.rows.head(2).to_json(orient="split", index=False))
    good = Client().post(url, data=json.dumps({"dataframe_split": rows}), content_type="application/json", **auth)
    assert good.status_code == 200, good.content
    assert good["X-Plinth-Model-Version"] == str(iris_model.version)
    assert len(good.json()["predictions"]) == 2
    malformed = Client().post(url, data="{not json", content_type="application/json", **auth)
    assert malformed.status_code == 400
    assert malformed.json()["error_code"] == "BAD_REQUEST"
    assert "Invalid input" in malformed.json()["message"]
    wrong = {"dataframe_split": {"columns": ["petals"], "data": [[1.0]]}}
    columns = Client().post(url, data=json.dumps(wrong), content_type="application/json", **auth)
    assert columns.status_code == 400
    assert "missing inputs" in columns.json()["message"]

    # make run's shutdown: every model server of the data directory ends.
    record = ServerRecord.read(revision_dir(revision))
    assert record is not None
    assert stop_all_model_servers() == 1
    assert group_members(record.pid) == []
    assert backend.probe(revision).state == "gone"


def test_a_model_that_cannot_load_fails_with_its_log(
    backend: LocalServing, mlflow_up: str, ada: Any, project: Any, broken_model: Registered
) -> None:
    deployment = deployment_of(ada, project, broken_model)
    revision = add_revision(deployment, broken_model.version, RevisionStatus.STARTING)
    backend.start(revision)
    probe = wait_for(backend, revision, {"up", "failed", "crashed"})
    assert probe.state == "failed", backend.logs(revision)
    assert "the model does not load" in probe.message
    assert "weights.bin is missing" in probe.message


def test_a_version_the_registry_does_not_have_fails_without_a_process(
    backend: LocalServing, mlflow_up: str, ada: Any, project: Any, iris_model: Registered
) -> None:
    deployment = deployment_of(ada, project, iris_model)
    revision = add_revision(deployment, 99, RevisionStatus.STARTING)
    backend.start(revision)
    probe = backend.probe(revision)
    assert probe.state == "failed"
    assert f"models:/{iris_model.name}/99" in probe.message
    assert Revision.objects.get(pk=revision.pk).pid is None


def test_a_revision_retired_while_it_started_is_stopped_again(
    backend: LocalServing, mlflow_up: str, ada: Any, project: Any, iris_model: Registered
) -> None:
    deployment = deployment_of(ada, project, iris_model)
    revision = add_revision(deployment, iris_model.version, RevisionStatus.RETIRED)
    backend.start(revision)
    record = ServerRecord.read(revision_dir(revision))
    assert record is not None
    assert group_members(record.pid) == []
    assert backend.probe(revision).state == "gone"


def test_ports_come_from_the_configured_range(settings: Any, data_dir: Path) -> None:
    from apps.deployments.serving.local import port_range

    settings.PLINTH_SERVING_PORTS = "20100-20102"
    assert list(port_range()) == [20100, 20101, 20102]
    settings.PLINTH_SERVING_PORTS = "20100"
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        port_range()


@pytest.mark.slow
def test_make_runs_runner_ends_the_model_servers_when_it_stops_and_leftovers_when_it_starts(
    tmp_path: Path,
    migrated: Path,  # noqa: F811 - the fixture imported above
    runners: list[Runner],  # noqa: F811
) -> None:
    """The worker starts model servers outside the runner's parts; the runner still ends
    them: at start those a killed runner left, and at its stop those started meanwhile."""
    data = tmp_path / "data"

    def plant(number: int) -> subprocess.Popen[bytes]:
        # A process recorded as revision <number>'s model server, as LocalServing records one.
        folder = data / "serving" / "1" / f"r{number}"
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        start = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        ServerRecord(proc.pid, start, 18100 + number, 0).write(folder)
        return proc

    left_over = plant(1)
    runner = Runner(data, migrated)
    runners.append(runner)
    runner.wait_until_up()
    assert left_over.wait(timeout=30) is not None  # ended at start
    assert "Ended 1 model server(s) left running by a previous runner" in runner.output()
    started_meanwhile = plant(2)
    runner.stop()
    assert started_meanwhile.wait(timeout=30) is not None
    assert "Stopped 1 model server(s)" in (data / "runner.log").read_text()
