"""The embedded runner (`manage.py embedded`, what `make run` starts) as a real process
tree: whatever ends it ends everything it started, a part that crashes is restarted while
the rest keeps serving, and one data directory has one runner at a time.

Each test starts the runner on its own data directory and free ports, reads the process
groups it started from `embedded.children.json`, and looks for survivors in /proc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apps.core.guard import end_group, group_members

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")]
ROOT = Path(__file__).resolve().parents[2]
MLFLOW_DOWN = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def runner_env(data: Path, *, own_mlflow: bool = False, log_level: str = "") -> dict[str, str]:
    # The runner's own SQLite database and embedded broker, whatever this test run uses.
    drop = ("PLINTH_", "DJANGO_", "DATABASE_URL", "CELERY_", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PLINTH_DATA_DIR=str(data), PLINTH_LOG_JSON="false", PYTHONUNBUFFERED="1")
    if log_level:
        env["PLINTH_LOG_LEVEL"] = log_level
    if own_mlflow:
        env["PLINTH_MLFLOW_PORT"] = str(free_port())
    else:
        env["MLFLOW_TRACKING_URI"] = MLFLOW_DOWN
    return env


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied into each test's data directory."""
    data = tmp_path_factory.mktemp("embedded-template")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=runner_env(data),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return data / "plinth.sqlite3"


class Runner:
    """One `manage.py embedded` in its own data directory, with helpers to look at it."""

    def __init__(self, data: Path, migrated: Path, *, own_mlflow: bool = False, log_level: str = "") -> None:
        data.mkdir(parents=True, exist_ok=True)
        shutil.copy(migrated, data / "plinth.sqlite3")
        self.data = data
        self.port = free_port()
        self.env = runner_env(data, own_mlflow=own_mlflow, log_level=log_level)
        self.log = open(data / "runner.log", "wb")  # noqa: SIM115 - closed in stop()
        self.seen_groups: set[int] = set()
        self.proc = self.start_another()

    def start_another(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "manage.py", "embedded", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def groups(self) -> dict[str, int]:
        """Part name → process group, as the runner recorded them (and remembered here)."""
        try:
            records = json.loads((self.data / "embedded.children.json").read_text())
        except (OSError, ValueError):
            return {}
        groups = {r["name"]: r["pgid"] for r in records}
        self.seen_groups.update(groups.values())
        return groups

    def survivors(self) -> list[int]:
        return [pid for pgid in self.seen_groups for pid in group_members(pgid)]

    def output(self) -> str:
        self.log.flush()
        return (self.data / "runner.log").read_text(errors="replace")

    def wait_until_up(self) -> None:
        wait_for(lambda: answers(f"{self.url}/healthz"), 90, "the web server")
        wait_for(lambda: len(self.groups()) >= 3, 10, "the runner to record its parts")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pgid in self.seen_groups:  # never leave anything behind, even when a test failed
            end_group(pgid, grace=0)
        self.log.close()


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        runner.stop()


def test_sigterm_during_start_up_leaves_nothing_running(tmp_path: Path, migrated: Path, runners: list[Runner]) -> None:
    runner = Runner(tmp_path / "data", migrated, own_mlflow=True)
    runners.append(runner)
    # As soon as every part has been started, long before MLflow or the web server answers.
    wait_for(lambda: len(runner.groups()) == 4, 60, "the runner to start its four parts")
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=60) == 0
    assert "Plinth is running" not in runner.output()
    wait_for(lambda: not runner.survivors(), 30, "every process it started to end")
    assert set(runner.groups()) == set(), "the runner removes its list of parts when it stops"


def test_kill_9_of_the_runner_takes_every_part_with_it_and_leftovers_are_ended_at_start(
    tmp_path: Path, migrated: Path, runners: list[Runner]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # What a dead runner left: a process group still running, and its stale lock file.
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    start = int(Path(f"/proc/{leftover.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    (data / "embedded.children.json").write_text(json.dumps([{"name": "worker", "pgid": leftover.pid, "start": start}]))
    (data / "embedded.pid").write_text("999999\n")
    runner = Runner(data, migrated)
    runners.append(runner)
    try:
        assert leftover.wait(timeout=30) == -signal.SIGTERM
    finally:
        if leftover.poll() is None:
            leftover.kill()
    runner.wait_until_up()
    assert "Ended 1 process group(s) left running by a previous runner" in runner.output()
    assert runner.survivors()
    runner.proc.kill()
    runner.proc.wait(timeout=10)
    wait_for(lambda: not runner.survivors(), 30, "every process it started to end after kill -9")


def test_a_killed_worker_is_restarted_while_pages_keep_being_served(
    tmp_path: Path, migrated: Path, runners: list[Runner]
) -> None:
    runner = Runner(tmp_path / "data", migrated)
    runners.append(runner)
    runner.wait_until_up()
    worker_group = runner.groups()["worker"]
    # The Celery worker itself (the guard's child), not its guard: as a crash or the OOM killer would.
    worker = next(pid for pid in group_members(worker_group) if pid != worker_group and _ppid(pid) == worker_group)
    killed_at = time.time()
    os.kill(worker, signal.SIGKILL)
    assert answers(f"{runner.url}/login/")
    wait_for(lambda: runner.groups().get("worker") not in (None, worker_group), 30, "the worker to be restarted")
    wait_for(lambda: not group_members(worker_group), 15, "the old worker's pool processes to end")
    assert "worker exited with status 137" in runner.output()
    assert runner.proc.poll() is None and answers(f"{runner.url}/login/")
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "from apps.core.tasks import heartbeat; heartbeat.delay()"],
        cwd=ROOT,
        env=runner.env,
        check=True,
        capture_output=True,
        timeout=60,
    )

    def heartbeat_after_the_kill() -> bool:
        with sqlite3.connect(runner.data / "plinth.sqlite3", timeout=20) as db:
            rows = db.execute("SELECT seen_at FROM core_workerheartbeat").fetchall()
        return any(_epoch(seen) > killed_at for (seen,) in rows)

    wait_for(heartbeat_after_the_kill, 45, "the restarted worker to run a task")


def test_a_second_runner_on_the_same_data_directory_refuses(
    tmp_path: Path, migrated: Path, runners: list[Runner]
) -> None:
    runner = Runner(tmp_path / "data", migrated)
    runners.append(runner)
    wait_for(lambda: len(runner.groups()) >= 3, 60, "the first runner to start its parts")
    before = dict(runner.groups())
    second = runner.start_another()
    assert second.wait(timeout=60) != 0
    assert f"Another embedded runner (PID {runner.proc.pid}) is already running" in runner.output()
    assert runner.proc.poll() is None and runner.groups() == before
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=60) == 0
    wait_for(lambda: not runner.survivors(), 30, "every process it started to end")
    assert "did not stop" not in runner.output(), "every part stopped in order, none had to be killed"


BANNER = "Plinth is running"
BEAT_ROUTINE = "Sending due task"  # beat's INFO line, every few seconds


def last_reconciler_pass(data: Path) -> str | None:
    """When the last `sync_launches` pass (sent by beat, run by the worker) finished."""
    with sqlite3.connect(data / "plinth.sqlite3", timeout=20) as db:
        row = db.execute("SELECT last_finished_at FROM core_reconcilerpass WHERE name = 'sync_launches'").fetchone()
    return row[0] if row else None


def test_the_banner_comes_once_everything_answers_and_routine_logs_do_not_bury_it(
    tmp_path: Path, migrated: Path, runners: list[Runner]
) -> None:
    runner = Runner(tmp_path / "data", migrated, own_mlflow=True)
    runners.append(runner)
    wait_for(lambda: BANNER in runner.output(), 240, "the banner")
    before, _, after = runner.output().partition(BANNER)
    for part in ("web", "worker", "mlflow"):
        assert f"  {part} answers (" in before, f"progress names {part} before the banner"
    assert "Waiting for the web server, MLflow and a worker to answer" in before
    assert f"http://127.0.0.1:{runner.port}/" in after and "Demo logins" in after
    assert answers(f"{runner.url}/healthz")
    # Beat sends its routine tasks and the worker runs them (which call MLflow), quietly.
    banner_at, pass_at_banner = len(runner.output()), last_reconciler_pass(runner.data)
    wait_for(
        lambda: last_reconciler_pass(runner.data) not in (None, pass_at_banner),
        60,
        "a reconciler pass after the banner",
    )
    later = runner.output()[banner_at:]
    assert BEAT_ROUTINE not in later and "/api/2.0/mlflow/" not in later, later[-2000:]
    assert "Sending due task" not in runner.output()


def test_no_banner_while_mlflow_is_down_and_plinth_log_level_still_rules_beat(
    tmp_path: Path, migrated: Path, runners: list[Runner]
) -> None:
    runner = Runner(tmp_path / "data", migrated, log_level="INFO")
    runners.append(runner)
    runner.wait_until_up()
    # PLINTH_LOG_LEVEL=INFO: beat's routine lines are back; MLflow (down) holds the banner.
    wait_for(lambda: BEAT_ROUTINE in runner.output(), 60, "beat's INFO lines")
    wait_for(lambda: "still waiting for mlflow" in runner.output(), 60, "a progress line naming MLflow")
    assert "  web answers (" in runner.output()
    assert BANNER not in runner.output()


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _epoch(stored: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(stored).replace(tzinfo=UTC).timestamp()
