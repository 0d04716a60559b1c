"""One interface per MLflow double, with two implementations behind it: the double as the unit
tests configure it, and the real `mlflow server` (the session's `mlflow_server`) seeded with
MLflow's own client, as a training script would. Contract tests ask for `tracking`,
`registry` or `launches` and run once against each (`fake`, `real`); the real ones carry the
`mlflow` mark.

Each world gives the gateway the app code uses (`MlflowGateway` / `RegistryGateway`: on the
fake side it is patched to answer from the double, exactly as the unit tests patch it) and a
few seeding helpers that do on each side what the other side's data needs."""

from __future__ import annotations

import itertools
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from apps.registry.mlflow import RegistryGateway
from apps.tracking.gateway import MlflowGateway
from tests.launches.conftest import FakeMlflow as FakeLaunchMlflow
from tests.registry.fakes import FakeRegistry
from tests.registry.fakes import install as install_registry
from tests.tracking.fakes import FakeMlflow, FakeRun

FAKE_URL = "http://fake.invalid"
SIDES = ["fake", pytest.param("real", marks=pytest.mark.mlflow)]
# A metric history as the fake keeps it: (step, timestamp in ms, value) in logging order.
Points = list[tuple[int, int, float]]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


# -- tracking: tests/tracking/fakes.py FakeMlflow -------------------------------------------------
class FakeTracking:
    side = "fake"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = FakeMlflow().install(monkeypatch)
        self.gateway = MlflowGateway(FAKE_URL, timeout=5)
        self._experiments = itertools.count(1)

    def experiment(self) -> str:
        return str(next(self._experiments))

    def run(
        self,
        experiment_id: str,
        *,
        name: str = "run",
        start_time: int = 1_700_000_000_000,
        metrics: dict[str, Points] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        artifacts: dict[str, bytes] | None = None,
        deleted: bool = False,
    ) -> str:
        """A finished run (ended 60 s after `start_time`); returns its id."""
        run_id = uuid.uuid4().hex
        self.fake.add(
            FakeRun(
                run_id=run_id,
                experiment_id=experiment_id,
                name=name,
                start_time=start_time,
                end_time=start_time + 60_000,
                params=dict(params or {}),
                tags=dict(tags or {}),
                history={key: list(points) for key, points in (metrics or {}).items()},
                artifacts=dict(artifacts or {}),
                lifecycle_stage="deleted" if deleted else "active",
            )
        )
        return run_id


class RealTracking:
    side = "real"

    def __init__(self, url: str) -> None:
        self.client = _client(url)
        self.gateway = MlflowGateway(url, timeout=10)

    def experiment(self) -> str:
        return str(self.client.create_experiment(f"contract-{uuid.uuid4().hex}"))

    def run(
        self,
        experiment_id: str,
        *,
        name: str = "run",
        start_time: int = 1_700_000_000_000,
        metrics: dict[str, Points] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        artifacts: dict[str, bytes] | None = None,
        deleted: bool = False,
    ) -> str:
        from mlflow.entities import Metric, Param

        run = self.client.create_run(experiment_id, start_time=start_time, tags=tags or {}, run_name=name)
        run_id: str = run.info.run_id
        points = [Metric(k, v, ts, step) for k, history in (metrics or {}).items() for step, ts, v in history]
        if points or params:  # one call: MLflow's latest value and order do not depend on arrival
            self.client.log_batch(run_id, metrics=points, params=[Param(k, v) for k, v in (params or {}).items()])
        if artifacts:
            with tempfile.TemporaryDirectory() as folder:
                for path, body in artifacts.items():
                    target = Path(folder, path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(body)
                self.client.log_artifacts(run_id, folder)
        self.client.set_terminated(run_id, "FINISHED", end_time=start_time + 60_000)
        if deleted:
            self.client.delete_run(run_id)
        return run_id


@pytest.fixture(params=SIDES)
def tracking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeTracking | RealTracking:
    if request.param == "fake":
        return FakeTracking(monkeypatch)
    return RealTracking(request.getfixturevalue("mlflow_server"))


# -- registry: tests/registry/fakes.py FakeRegistry -------------------------------------------------
class FakeRegistryWorld:
    side = "fake"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake: FakeRegistry = install_registry(monkeypatch)
        self.gateway = RegistryGateway(FAKE_URL, timeout=5)
        self.project = f"contract-{uuid.uuid4().hex[:8]}/p"  # a project no other test uses

    def model(self, project: str | None, versions: list[dict[str, float]], prefix: str = "m") -> str:
        """A registered model with a fresh name, tagged `plinth.project = project` (None:
        untagged), one version per metrics dict; returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.fake.add_model(name, project, versions)
        return name

    def down(self) -> RegistryGateway:
        """A gateway to a registry that does not answer."""
        self.fake.down = True
        return self.gateway


class RealRegistryWorld:
    side = "real"

    def __init__(self, url: str) -> None:
        self.client = _client(url)
        self.gateway = RegistryGateway(url, timeout=10)
        self.project = f"contract-{uuid.uuid4().hex[:8]}/p"
        self.experiment_id = str(self.client.create_experiment(f"contract-{uuid.uuid4().hex}"))

    def model(self, project: str | None, versions: list[dict[str, float]], prefix: str = "m") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client.create_registered_model(name, tags={"plinth.project": project} if project else {})
        for metrics in versions:
            run_id = self.client.create_run(self.experiment_id).info.run_id
            for key, value in metrics.items():
                self.client.log_metric(run_id, key, value)
            self.client.set_terminated(run_id)
            # READY at once on a database store: no need for the client's polling wait
            self.client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, await_creation_for=0)
        return name

    def down(self) -> RegistryGateway:
        return RegistryGateway(f"http://127.0.0.1:{closed_port()}", timeout=2)


@pytest.fixture(params=SIDES)
def registry(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeRegistryWorld | RealRegistryWorld:
    if request.param == "fake":
        return FakeRegistryWorld(monkeypatch)
    return RealRegistryWorld(request.getfixturevalue("mlflow_server"))


# -- launches: tests/launches/conftest.py FakeMlflow (the run writes of a launch) ------------------
class FakeLaunches:
    side = "fake"

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = FakeLaunchMlflow()
        for method in ("create_run", "set_tag", "end_run", "reopen_run", "delete_run"):  # as `fake_mlflow`
            monkeypatch.setattr(MlflowGateway, method, lambda gw, *a, _m=method, **k: getattr(self.fake, _m)(*a, **k))
        self.gateway = MlflowGateway(FAKE_URL, timeout=5)
        self._experiments = itertools.count(1)

    def experiment(self) -> str:
        return str(next(self._experiments))

    def delete_experiment(self, experiment_id: str) -> None:
        self.fake.deleted_experiments.add(experiment_id)

    def observe(self, run_id: str) -> dict[str, Any] | None:
        """What the unit tests read of a run: None once deleted; status "RUNNING" until it
        is ended (the fake records that as "")."""
        run = self.fake.runs.get(run_id)
        if run is None:
            return None
        return {
            "experiment_id": run["experiment_id"],
            "name": run["name"],
            "tags": dict(run["tags"]),
            "status": run["status"] or "RUNNING",
        }


class RealLaunches:
    side = "real"

    def __init__(self, url: str) -> None:
        self.client = _client(url)
        self.gateway = MlflowGateway(url, timeout=10)

    def experiment(self) -> str:
        return str(self.client.create_experiment(f"contract-{uuid.uuid4().hex}"))

    def delete_experiment(self, experiment_id: str) -> None:
        self.client.delete_experiment(experiment_id)

    def observe(self, run_id: str) -> dict[str, Any] | None:
        """The run as MLflow keeps it; None once deleted. MLflow's own `mlflow.runName` tag
        (it mirrors the name) is left out, as the fake does not keep one."""
        run = self.gateway.get_run(run_id)
        info = run["info"]
        if info["lifecycle_stage"] == "deleted":
            return None
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        tags.pop("mlflow.runName", None)
        return {
            "experiment_id": info["experiment_id"],
            "name": info["run_name"],
            "tags": tags,
            "status": info["status"],
        }


@pytest.fixture(params=SIDES)
def launches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeLaunches | RealLaunches:
    if request.param == "fake":
        return FakeLaunches(monkeypatch)
    return RealLaunches(request.getfixturevalue("mlflow_server"))
