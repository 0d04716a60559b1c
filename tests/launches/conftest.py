"""Shared doubles for the launch tests.

FakeBackend is a small, stateful compute backend (a FAKE, not a mock): it keeps one job
per launch, answers `poll` from that state ("missing" for what it never saw), treats a
second submit of the same launch as "already exists" (as the real backends must), and
counts every call. Tests move its jobs along with `set_state` / `forget`.

FakeMlflow replaces the MLflow gateway's write calls, and the metric reads the sweep
optimiser makes (a run's metric history, the bulk history, get_run), with an in-memory store
of runs, so tests that are not about MLflow need no server; `mlflow_up` tests use the real one."""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from apps.compute.base import BackendRejected, BackendUnavailable, GpuDevice, Observation
from apps.launches.models import LIVE, Launch, Template
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowError, MlflowGateway
from portal.celery import app

JOB_LIVE = frozenset({"pending", "running"})


class FakeBackend:
    name = "fake"

    def __init__(self) -> None:
        self.jobs: dict[int, Observation] = {}
        self.submits: Counter[int] = Counter()
        self.cancels: Counter[int] = Counter()
        self.polls = 0
        self.max_live = 0  # the most jobs ever pending/running at once on this backend
        self.unavailable = ""  # a message: submit raises BackendUnavailable with it
        self.reject = ""  # a message: submit raises BackendRejected with it
        self.output: dict[int, list[str]] = {}
        self.gpus = 0  # how many GPUs `inventory` reports

    # -- the Backend interface -----------------------------------------------------------
    def submit(self, launch: Launch) -> None:
        self.submits[launch.pk] += 1
        if self.unavailable:
            raise BackendUnavailable(self.unavailable)
        if self.reject:
            raise BackendRejected(self.reject)
        if launch.pk not in self.jobs:  # a second submit of the same name: "already exists"
            self.jobs[launch.pk] = Observation("pending", "waiting in the fake queue")
        self.max_live = max(self.max_live, self.live_count())

    def poll(self, launches: Sequence[Launch]) -> dict[int, Observation]:
        self.polls += 1
        return {launch.pk: self.jobs.get(launch.pk, Observation("missing")) for launch in launches}

    def logs(self, launch: Launch, tail: int = 200) -> str:
        return "\n".join(self.output.get(launch.pk, [])[-tail:])

    def cancel(self, launch: Launch) -> None:
        self.cancels[launch.pk] += 1
        job = self.jobs.get(launch.pk)
        if job is not None and job.state in JOB_LIVE:
            self.jobs[launch.pk] = Observation("cancelled", "cancelled", -15)

    def inventory(self) -> list[GpuDevice]:
        return [GpuDevice(node="fake", index=i, model="Fake GPU") for i in range(self.gpus)]

    # -- driving it from a test ----------------------------------------------------------
    def set_state(self, pk: int, state: str, reason: str = "", exit_code: int | None = None) -> None:
        assert pk in self.jobs, f"launch {pk} was never submitted to the fake backend"
        self.jobs[pk] = Observation(state, reason, exit_code)

    def forget(self, pk: int) -> None:
        self.jobs.pop(pk, None)

    def live_count(self) -> int:
        return sum(1 for job in self.jobs.values() if job.state in JOB_LIVE)

    def live_pks(self) -> list[int]:
        return sorted(pk for pk, job in self.jobs.items() if job.state in JOB_LIVE)


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    """Every backend lookup (whatever the name) returns one FakeBackend for this test.
    `get_backend` is imported by name into several modules, so each is patched."""
    fake = FakeBackend()

    def get_backend(name: str) -> FakeBackend:
        return fake

    for module in (
        "apps.compute.registry",
        "apps.launches.tasks",
        "apps.launches.services",
        "apps.launches.api",
        "apps.launches.views",
    ):
        monkeypatch.setattr(f"{module}.get_backend", get_backend)
    return fake


class FakeMlflow:
    """The runs the portal created, with their tags and final status ("" while running).

    MLflow's refusals, as the contract tests (tests/contracts) check them against the real
    server: a run in a deleted experiment (`deleted_experiments`) is refused with MLflow's
    400 "must be in the 'active' state"; tagging or ending an unknown run is its 404, and a
    deleted run its 400. Unlike MLflow, any other experiment id is taken as existing."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.deleted_experiments: set[str] = set()
        self._ids = itertools.count(1)
        self.clock: list[int] = []  # one entry per logged point: its timestamp is the count so far

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str] | None = None) -> str:
        if experiment_id in self.deleted_experiments:
            raise MlflowError(
                f"The experiment {experiment_id} must be in the 'active' state. Current state is deleted.",
                error_code="INVALID_PARAMETER_VALUE",
            )
        run_id = f"run{next(self._ids)}"
        self.runs[run_id] = {"experiment_id": experiment_id, "name": run_name, "tags": dict(tags or {}), "status": ""}
        return run_id

    def _active(self, run_id: str) -> dict[str, Any]:
        if run_id in self.deleted:
            raise MlflowError(
                f"The run {run_id} must be in the 'active' state. Current state is deleted.",
                error_code="INVALID_PARAMETER_VALUE",
            )
        if run_id not in self.runs:
            raise MlflowError(f"Run with id={run_id} not found", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        return self.runs[run_id]

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._active(run_id)["tags"][key] = value

    def end_run(self, run_id: str, status: str) -> None:
        self._active(run_id)["status"] = status

    def reopen_run(self, run_id: str) -> None:
        """Running again ("" as for a run never ended); MLflow's refusals as `end_run`'s."""
        self._active(run_id)["status"] = ""

    # -- metrics: what a training script would have logged (tests call `log`) --------------
    def log(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        self._active(run_id).setdefault("metrics", {}).setdefault(key, []).append((step, len(self.clock), value))
        self.clock.append(1)

    def _points(self, run_id: str, key: str) -> list[dict[str, Any]]:
        logged = self.runs.get(run_id, {}).get("metrics", {}).get(key, [])
        return [{"run_id": run_id, "key": key, "step": s, "timestamp": t, "value": v} for s, t, v in logged]

    def get_metric_history(
        self, run_id: str, key: str, max_results: int = 25_000, page_token: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of `max_results` points (MLflow pages its history the same way)."""
        if run_id not in self.runs and run_id not in self.deleted:
            raise MlflowError(f"Run with id={run_id} not found", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        points = self._points(run_id, key)
        start = int(page_token or 0)
        end = start + max_results
        return points[start:end], (str(end) if end < len(points) else "")

    def get_history_bulk(self, run_ids: list[str], key: str, max_results: int = 25_000) -> list[dict[str, Any]]:
        return [p for run_id in sorted(run_ids) for p in self._points(run_id, key)][:max_results]

    def get_run(self, run_id: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            raise MlflowError(f"Run with id={run_id} not found", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        latest = {key: max(points)[2] for key, points in run.get("metrics", {}).items() if points}
        return {
            "info": {"run_id": run_id, "experiment_id": run["experiment_id"], "status": run["status"] or "RUNNING"},
            "data": {
                "metrics": [{"key": k, "value": v} for k, v in latest.items()],
                "tags": [{"key": k, "value": v} for k, v in run["tags"].items()],
            },
        }

    def delete_run(self, run_id: str) -> None:
        """MLflow keeps a deleted run (readable, no longer writable); `runs` drops it."""
        if run_id not in self.runs and run_id not in self.deleted:
            raise MlflowError(f"Run with id={run_id} not found", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        if run_id in self.runs:
            self.deleted.append(run_id)
        self.runs.pop(run_id, None)


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
    fake = FakeMlflow()
    for method in (
        "create_run",
        "set_tag",
        "end_run",
        "reopen_run",
        "delete_run",
        "get_metric_history",
        "get_history_bulk",
        "get_run",
    ):
        monkeypatch.setattr(
            MlflowGateway, method, lambda self, *args, _m=method, **kwargs: getattr(fake, _m)(*args, **kwargs)
        )
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


@pytest.fixture
def linked_project(project: Project) -> Project:
    """The demo project with its MLflow experiment already linked (for FakeMlflow tests)."""
    Project.objects.filter(pk=project.pk).update(mlflow_state=ExperimentState.LINKED, mlflow_experiment_id="7")
    project.refresh_from_db()
    return project


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A private PLINTH data dir; any local job still alive at the end is killed."""
    folder = tmp_path / "data"
    folder.mkdir()
    settings.DATA_DIR = folder
    settings.PLINTH_JOB_MLFLOW_URI = ""
    yield folder
    for pid_file in (folder / "launches").glob("*/pid"):
        try:
            group = int(pid_file.read_text().split()[1])
            os.killpg(group, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def make_template(team: Any, slug: str, command: list[str], **extra: Any) -> Template:
    fields: dict[str, Any] = {
        "team": team,
        "slug": slug,
        "name": slug,
        "image": "python:3.12",
        "command": command,
        "parameters": {},
        "backends": ["local", "kubernetes"],
        "max_runtime_seconds": 600,
    }
    fields.update(extra)
    return Template.objects.create(**fields)


def live_trials(sweep_pk: int) -> int:
    return Launch.objects.filter(sweep_id=sweep_pk, status__in=LIVE).count()
