"""The whole local flow, for real: the API creates a launch, a Celery worker (started here,
fed through the configured broker) submits it, the local runner runs the job as a detached
process group, the reconciler folds what it sees into the row, and the job logs to a real
MLflow server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from celery.contrib.testing.worker import start_worker

from apps.accounts.models import Team, User
from apps.launches import tasks
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import TERMINAL, Launch, Status
from apps.launches.services import create_template
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway
from portal.celery import app
from tests.conftest import api_for
from tests.launches.conftest import make_template

pytestmark = [pytest.mark.celery, pytest.mark.mlflow, pytest.mark.django_db(transaction=True)]

LONG_COMMAND = ["python", "-c", "import subprocess,time; subprocess.Popen(['sleep','300']); time.sleep(300)"]


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    app.control.purge()  # messages left over from other tests must not run against this database
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20
    ) as running:
        yield running


@pytest.fixture
def flow(worker: Any, data_dir: Path, mlflow_up: str) -> str:
    app.control.purge()
    return mlflow_up


def wait_for(condition: Callable[[], bool], seconds: float = 60, sync: bool = True) -> bool:
    """Poll `condition`, running the reconciler (as beat would) between looks."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sync:
            tasks.sync_launches()
        if condition():
            return True
        time.sleep(0.3)
    return False


def reached(launch: Launch, *statuses: str) -> Callable[[], bool]:
    def check() -> bool:
        launch.refresh_from_db()
        return launch.status in statuses

    return check


def launch_via_api(user: User, template: str, **body: Any) -> Launch:
    response = api_for(user).post(
        "/api/v1/launches/", {"project": "demo/demo", "template": template, **body}, format="json"
    )
    assert response.status_code == 201, response.json()
    return Launch.objects.get(pk=response.json()["id"])


def pid_info(data_dir: Path, launch: Launch) -> tuple[int, int, int]:
    runner, group, command = (int(x) for x in (data_dir / "launches" / str(launch.pk) / "pid").read_text().split())
    return runner, group, command


def group_gone(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


def processes_in_group(group: int) -> list[tuple[int, bytes]]:
    """Live (not zombie) processes of a process group, with their command lines."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if int(fields[2]) == group and fields[0] not in {"Z", "X"}:
            found.append((int(entry.name), cmdline))
    return found


def run_status(url: str, run_id: str) -> str:
    return str(MlflowGateway(url).get_run(run_id)["info"]["status"])


def test_the_demo_template_runs_to_success_and_logs_its_curve_and_metrics_to_mlflow(
    flow: str, ada: User, root: User, project: Project
) -> None:
    create_template(root, None, **SKLEARN_DIGITS)

    launch = launch_via_api(ada, "sklearn-digits", parameters={"epochs": 20})

    assert launch.mlflow_run_id
    assert wait_for(reached(launch, Status.PENDING, Status.RUNNING, *TERMINAL), 30, sync=False), (
        f"the worker did not submit the launch: {launch.status} {launch.status_reason}"
    )
    assert wait_for(reached(launch, *TERMINAL), 120), f"still {launch.status}: {launch.status_reason}"
    assert launch.status == Status.SUCCEEDED, launch.status_reason
    assert launch.exit_code == 0
    assert launch.submitted_at and launch.started_at and launch.finished_at
    assert launch.submitted_at <= launch.finished_at and launch.started_at <= launch.finished_at

    run = MlflowGateway(flow).get_run(launch.mlflow_run_id)
    assert run["info"]["status"] == "FINISHED"
    metrics = {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}
    assert {"accuracy", "f1"} <= set(metrics)
    assert 0.5 < metrics["accuracy"] <= 1.0
    history = requests.get(
        f"{flow}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": launch.mlflow_run_id, "metric_key": "loss"},
        timeout=10,
    )
    assert history.status_code == 200
    steps = {point["step"] for point in history.json()["metrics"]}
    assert len(steps) >= 20
    tags = {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
    assert tags.get("plinth.launch") == str(launch.pk)
    assert tags.get("plinth.project") == "demo/demo"

    logs = api_for(ada).get(f"/api/v1/launches/{launch.pk}/logs/")
    assert logs.status_code == 200
    assert "accuracy" in logs.content.decode()


def test_cancelling_a_long_job_ends_its_whole_process_group(
    flow: str, ada: User, team: Team, project: Project, data_dir: Path
) -> None:
    make_template(team, "forever", LONG_COMMAND)
    launch = launch_via_api(ada, "forever")
    assert wait_for(reached(launch, Status.RUNNING, *TERMINAL), 30), f"{launch.status}: {launch.status_reason}"
    assert launch.status == Status.RUNNING, launch.status_reason
    runner, group, command = pid_info(data_dir, launch)

    def has_sleep() -> bool:
        return any(cmd.split(b"\0")[:2] == [b"sleep", b"300"] for _, cmd in processes_in_group(group))

    assert wait_for(has_sleep, 15, sync=False), "the job's grandchild `sleep 300` never started"
    members = {pid for pid, _ in processes_in_group(group)}
    # The command leads a group of its own; the runner stays outside it to record the end.
    assert command in members and runner not in members

    response = api_for(ada).post(f"/api/v1/launches/{launch.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == Status.CANCELLING

    assert wait_for(reached(launch, *TERMINAL), 30), f"still {launch.status}: {launch.status_reason}"
    assert launch.status == Status.CANCELLED, launch.status_reason
    assert wait_for(lambda: group_gone(group), 10, sync=False), f"left in the group: {processes_in_group(group)}"
    assert not has_sleep()
    assert launch.finished_at is not None
    assert wait_for(lambda: run_status(flow, launch.mlflow_run_id) == "KILLED", 15)


def test_a_job_that_exits_3_fails_with_its_exit_code_and_last_log_lines(
    flow: str, ada: User, team: Team, project: Project
) -> None:
    script = "import sys\nfor i in range(40): print('line', i)\nprint('the last words')\nsys.exit(3)"
    make_template(team, "exit3", ["python", "-c", script])
    launch = launch_via_api(ada, "exit3")

    assert wait_for(reached(launch, *TERMINAL), 60), f"still {launch.status}: {launch.status_reason}"
    assert launch.status == Status.FAILED
    assert launch.exit_code == 3
    assert "exit code 3" in launch.status_reason
    assert "the last words" in launch.status_reason and "line 39" in launch.status_reason
    assert "line 0\n" not in launch.status_reason  # the tail only, not the whole log
    assert wait_for(lambda: run_status(flow, launch.mlflow_run_id) == "FAILED", 15)


def test_a_job_whose_runner_died_without_an_exit_status_fails_as_worker_restarted(
    flow: str, ada: User, team: Team, project: Project, data_dir: Path
) -> None:
    make_template(team, "forever", LONG_COMMAND)
    launch = launch_via_api(ada, "forever")
    assert wait_for(reached(launch, Status.RUNNING, *TERMINAL), 30), f"{launch.status}: {launch.status_reason}"
    assert launch.status == Status.RUNNING
    runner, group, _command = pid_info(data_dir, launch)

    # The host restarted: everything died at once, the runner first, so nothing was written.
    os.kill(runner, signal.SIGKILL)
    os.killpg(group, signal.SIGKILL)
    assert wait_for(lambda: group_gone(group), 10, sync=False)
    folder = data_dir / "launches" / str(launch.pk)
    assert not (folder / "exit.json").exists() and not (folder / "cancelled").exists()

    assert wait_for(reached(launch, *TERMINAL), 20), f"still {launch.status}: {launch.status_reason}"
    assert launch.status == Status.FAILED
    assert "worker restarted" in launch.status_reason
    assert launch.exit_code is None
    assert wait_for(lambda: run_status(flow, launch.mlflow_run_id) == "FAILED", 15)


def test_cancel_also_ends_a_job_that_ignores_sigterm(
    flow: str, ada: User, team: Team, project: Project, data_dir: Path
) -> None:
    script = (
        "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(300)"
    )
    make_template(team, "stubborn", ["python", "-c", script])
    launch = launch_via_api(ada, "stubborn")
    assert wait_for(reached(launch, Status.RUNNING, *TERMINAL), 30), f"{launch.status}: {launch.status_reason}"
    folder = data_dir / "launches" / str(launch.pk)
    assert wait_for(lambda: "ready" in (folder / "output.log").read_text(), 15, sync=False)
    _runner, group, _command = pid_info(data_dir, launch)

    response = api_for(ada).post(f"/api/v1/launches/{launch.pk}/cancel/")
    assert response.status_code == 200

    assert wait_for(reached(launch, *TERMINAL), 30), f"still {launch.status}: {launch.status_reason}"
    assert launch.status == Status.CANCELLED
    assert wait_for(lambda: group_gone(group), 3, sync=False), f"left in the group: {processes_in_group(group)}"


def test_a_job_past_its_maximum_run_time_fails_and_leaves_no_process_behind(
    flow: str, ada: User, team: Team, project: Project, data_dir: Path
) -> None:
    make_template(team, "slow", LONG_COMMAND, max_runtime_seconds=2)
    launch = launch_via_api(ada, "slow")
    assert wait_for(reached(launch, Status.RUNNING, *TERMINAL), 30), f"{launch.status}: {launch.status_reason}"
    _runner, group, _command = pid_info(data_dir, launch)

    assert wait_for(reached(launch, *TERMINAL), 30), f"still {launch.status}: {launch.status_reason}"
    assert launch.status == Status.FAILED
    assert "maximum run time of 2 s" in launch.status_reason
    assert wait_for(lambda: group_gone(group), 3, sync=False), f"left in the group: {processes_in_group(group)}"
