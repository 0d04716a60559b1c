"""The `local` backend: launches run as processes on the worker host (the embedded mode).

Each launch gets a folder under <data dir>/launches/<id>/ holding output.log, pid
("<runner pid> <process group> <command pid>"), exit.json when the command ended, and
cancelled when someone cancelled it. The state of a launch is read from those files and
the process table, so it survives worker restarts: a process that is gone without an
exit.json is reported as failed ("worker restarted").

The command runs in <launch dir>/work (its working directory, with HOME and TMPDIR inside
it) with an allow-listed environment (`job_process_env`), never the worker's own. That is
all the isolation there is: the job runs as the worker's OS user, with its file permissions
and network, limited only by the template's maximum run time. It is for a trusted team and
for development; in production it is off unless PLINTH_LOCAL_BACKEND_ENABLED is set."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from apps.compute.base import BackendRejected, GpuDevice, Observation
from apps.compute.registry import check_enabled
from apps.core.wording import exit_status
from apps.launches.runenv import job_argv, job_env

if TYPE_CHECKING:
    from apps.launches.models import Launch

LOG_LINES_IN_REASON = 15
# What a job may see of the worker's environment: where programs are, locale and time zone.
HOST_ENV_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
HOST_ENV_PREFIXES = ("LC_",)
PORTAL_PYTHON = frozenset({"python", "python3"})


def launch_dir(launch: Launch) -> Path:
    return Path(settings.DATA_DIR) / "launches" / str(launch.pk)


def work_dir(launch: Launch) -> Path:
    """The job's working directory: <data dir>/launches/<id>/work (never the portal's tree)."""
    return launch_dir(launch) / "work"


def job_process_env(
    launch: Launch,
    *,
    workdir: Path,
    gpu_devices: Sequence[int] = (),
    python: str | None = None,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a local job: an allow-list, never the worker's environment
    (which holds PLINTH_SECRET_KEY, DATABASE_URL, MLflow and OIDC credentials).

    From the worker (`host_env`, default os.environ) only PATH, LANG, LANGUAGE, LC_* and TZ.
    Of its own: HOME=<workdir>/.home and TMPDIR=<workdir>/.tmp (the caller creates them);
    the job's variables from `runenv.job_env` (MLFLOW_TRACKING_URI without credentials,
    MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID, PLINTH_LAUNCH_ID, PLINTH_PROJECT, PLINTH_PARAM_*);
    PYTHONUNBUFFERED=1; CUDA_VISIBLE_DEVICES (the GPU indexes it was given, "" for none);
    and, when the command runs on a Python interpreter (`python`: its path, from
    `local_argv`) of a virtualenv — an environment's build, or the portal's own when the
    portal runs in one — VIRTUAL_ENV and that virtualenv's bin folder first on PATH, so
    `pip`, `python` and console scripts the job starts are the environment's. The local
    backend has no per-project MLflow credentials, so none are set (the portal's are never
    passed on). Rule: the hardening issue's allow-list, and ARCHITECTURE.md "Jobs and model
    servers get an allow-listed environment, never the portal's secrets"."""
    host = os.environ if host_env is None else host_env
    env = {name: value for name, value in host.items() if name in HOST_ENV_NAMES or name.startswith(HOST_ENV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = str(workdir / ".home")
    env["TMPDIR"] = str(workdir / ".tmp")
    venv = _virtualenv_of(python) if python else None
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(Path(python or "").parent), env["PATH"]])
    env.update(job_env(launch))
    env["PYTHONUNBUFFERED"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(device) for device in gpu_devices)
    return env


def _virtualenv_of(python: str) -> Path | None:
    """The virtualenv folder an interpreter path (`<venv>/bin/python`) belongs to, or None
    when it is not a virtualenv's (the portal's own interpreter outside one)."""
    if python == sys.executable:
        return Path(sys.prefix) if sys.prefix != sys.base_prefix else None
    root = Path(python).parent.parent  # not resolved: a venv's bin/python is a symlink
    return root if (root / "pyvenv.cfg").is_file() else None


def local_argv(launch: Launch) -> tuple[list[str], str | None]:
    """The command as the local backend runs it, and the Python interpreter it runs on
    (None when the command is not `python`/`python3`).

    `python`/`python3` become the interpreter of the launch's environment
    (`runtime.python_for`: the environment's own virtualenv for a built one, the portal's
    interpreter for the portal environment and for launches older than environments). A
    relative script right after it (`python apps/.../train.py`) names a file of the
    portal's tree, as it names one in the image's WORKDIR on Kubernetes: it is made
    absolute, since the job now runs in a folder of its own. Raises BackendRejected when the
    environment has no ready build (the launch fails with that reason)."""
    from apps.environments.runtime import python_for

    argv = job_argv(launch)
    if not argv or argv[0] not in PORTAL_PYTHON:
        return argv, None
    try:
        python = python_for(launch.environment)
    except ValueError as exc:
        raise BackendRejected(str(exc)) from None
    argv[0] = python
    if len(argv) > 1 and not argv[1].startswith("-") and not os.path.isabs(argv[1]):
        script = Path(settings.BASE_DIR) / argv[1]
        if script.is_file():
            argv[1] = str(script)
    return argv, python


def tail_file(path: Path, lines: int) -> str:
    """The last `lines` lines of a file, reading only its end."""
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, max(4096, lines * 400))
        handle.seek(size - block)
        data = handle.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


def _read_pid(folder: Path) -> tuple[int, int] | None:
    """(runner pid, the command's process group) from the runner's pid file."""
    try:
        runner, group, *_ = (int(x) for x in (folder / "pid").read_text().split())
    except (OSError, ValueError):
        return None
    return runner, group


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pid: int) -> bool:
    """True when `pid` is a live (not zombie) process that is one of our runners."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in {"Z", "X"} and b"apps.compute.local_runner" in cmdline


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def nvml_gpus() -> list[GpuDevice]:
    """GPUs NVML reports on this host ([] without a driver, as on most laptops and CI)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver / library
        return []
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuDevice(
                    node=socket.gethostname(),
                    index=index,
                    uuid=uuid if isinstance(uuid, str) else uuid.decode(),
                    model=name if isinstance(name, str) else name.decode(),
                    memory_total_mib=int(memory.total) // 2**20,
                )
            )
        return devices
    finally:
        pynvml.nvmlShutdown()


class LocalBackend:
    """Processes on the worker host, at most PLINTH_LOCAL_MAX_CONCURRENT at a time."""

    name = "local"

    def __init__(self, max_concurrent: int | None = None) -> None:
        self.max_concurrent = max_concurrent or settings.PLINTH_LOCAL_MAX_CONCURRENT

    # -- slots and GPUs ----------------------------------------------------------------
    def _busy(self) -> list[Launch]:
        from apps.launches.models import Launch, Status

        started = Launch.objects.filter(
            backend=self.name,
            local_pid__isnull=False,
            status__in=[Status.SUBMITTING, Status.PENDING, Status.RUNNING, Status.CANCELLING],
        )
        return [launch for launch in started if not (launch_dir(launch) / "exit.json").exists()]

    def _free_gpus(self, busy: list[Launch]) -> list[int]:
        taken = {int(i) for launch in busy for i in launch.gpu_devices.split(",") if i}
        return [gpu.index for gpu in self.inventory() if gpu.index not in taken]

    # -- the interface -----------------------------------------------------------------
    def submit(self, launch: Launch) -> None:
        """Start the process now when a slot (and the GPUs) are free; otherwise leave it
        waiting: `poll` starts it when a slot frees up. Idempotent: a started launch is
        never started twice (its pid file is the proof). Raises BackendDisabled (a
        BackendRejected: the launch fails) when the local backend is switched off."""
        check_enabled(self.name)
        root = Path(settings.DATA_DIR) / "launches"
        root.mkdir(parents=True, exist_ok=True)
        # One host-wide lock around "is it started? is a slot free? start it": two reconciler
        # passes (or a task and a pass) must never start the same launch twice, or overfill.
        with open(root / ".submit.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._submit_locked(launch)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _submit_locked(self, launch: Launch) -> None:
        from apps.launches.models import Launch

        folder = launch_dir(launch)
        if (folder / "pid").exists() or (folder / "exit.json").exists() or (folder / "cancelled").exists():
            return
        busy = self._busy()
        if len(busy) >= self.max_concurrent:
            return
        devices: list[int] = []
        if launch.gpus:
            free = self._free_gpus(busy)
            if len(self.inventory()) < launch.gpus:
                raise BackendRejected(f"this host has {len(self.inventory())} GPUs (NVML); {launch.gpus} requested")
            if len(free) < launch.gpus:
                return  # wait for GPUs held by other launches
            devices = free[: launch.gpus]
        workdir = work_dir(launch)
        for path in (workdir / ".home", workdir / ".tmp"):
            path.mkdir(parents=True, exist_ok=True)
        argv, python = local_argv(launch)
        env = job_process_env(launch, workdir=workdir, gpu_devices=devices, python=python)
        starter = subprocess.Popen(
            [
                sys.executable,  # the runner is the portal's; the command it starts, the environment's
                "-m",
                "apps.compute.local_runner",
                str(folder),
                str(launch.max_runtime_seconds),
                str(workdir),
                "--",
                *argv,
            ],
            # The runner itself is imported from the portal's tree (`-m`); the command it
            # starts runs in `workdir`.
            cwd=settings.BASE_DIR,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        starter.wait(timeout=30)  # the runner double-forks: this returns at once
        deadline = time.monotonic() + 10
        while not (folder / "pid").exists() and not (folder / "exit.json").exists():
            if time.monotonic() > deadline:
                raise BackendRejected("the local runner did not start")
            time.sleep(0.02)
        pid = _read_pid(folder)
        Launch.objects.filter(pk=launch.pk).update(
            local_host=socket.gethostname(),
            local_pid=pid[0] if pid else None,
            gpu_devices=",".join(str(d) for d in devices),
        )

    def poll(self, launches: Sequence[Launch]) -> dict[int, Observation]:
        observations: dict[int, Observation] = {}
        waiting: list[Launch] = []
        for launch in launches:
            observation = self._observe(launch)
            if observation is None:
                waiting.append(launch)
            else:
                observations[launch.pk] = observation
        startable = [launch for launch in waiting if launch.status in ("pending", "submitting")]
        for launch in waiting:
            if launch.status == "cancelling":  # cancelled while it waited for a slot: never start it
                observations[launch.pk] = Observation("cancelled", "cancelled before it started")
            elif launch not in startable:
                observations[launch.pk] = Observation("failed", "no process was found for this launch")
        for launch in sorted(startable, key=lambda item: item.pk):  # first come, first served
            try:
                self.submit(launch)
            except BackendRejected as exc:
                observations[launch.pk] = Observation("failed", exc.message)
                continue
            observations[launch.pk] = self._observe(launch) or Observation(
                "pending",
                f"waiting for a free local slot ({self.max_concurrent} in use)"
                if not launch.gpus
                else "waiting for a free slot or GPU on this host",
            )
        return observations

    def _observe(self, launch: Launch) -> Observation | None:
        folder = launch_dir(launch)
        cancelled = (folder / "cancelled").exists()
        exit_path = folder / "exit.json"
        pid = _read_pid(folder)
        if exit_path.exists():
            data = json.loads(exit_path.read_text())
            code = int(data["exit_code"])
            started = _ts((folder / "pid").stat().st_mtime) if pid else None
            finished = _ts(float(data["finished_at"]))
            if cancelled:
                return Observation("cancelled", "cancelled", code, started, finished)
            if code == 0 and not data.get("reason"):
                return Observation("succeeded", "", 0, started, finished)
            reason = data.get("reason") or self._exit_reason(code)
            tail = tail_file(folder / "output.log", LOG_LINES_IN_REASON)
            return Observation("failed", f"{reason}\n{tail}".strip(), code, started, finished)
        if pid is None:
            if cancelled:
                return Observation("cancelled", "cancelled before it started")
            return None  # not started yet
        runner, group = pid
        if launch.local_host and launch.local_host != socket.gethostname():
            return Observation("running", f"running on {launch.local_host}")
        if _alive(runner) or _group_alive(group):
            return Observation("running", "", None, _ts((folder / "pid").stat().st_mtime))
        if cancelled:
            return Observation("cancelled", "cancelled", None, None, datetime.now(UTC))
        return Observation(
            "failed", "worker restarted: the process is gone and left no exit status", None, None, datetime.now(UTC)
        )

    @staticmethod
    def _exit_reason(code: int) -> str:
        """Why a process that was not cancelled ended, in the words of the launch's ended
        field (apps.core.wording.exit_status): "exit code 2", "ended by SIGTERM";
        SIGKILL adds "(possibly out of memory)"."""
        hint = " (possibly out of memory)" if code == -signal.SIGKILL else ""
        return exit_status(code, "failed") + hint

    def logs(self, launch: Launch, tail: int = 200) -> str:
        return tail_file(launch_dir(launch) / "output.log", tail)

    def cancel(self, launch: Launch) -> None:
        """Mark it cancelled, then end the command's whole process group (its children too):
        SIGTERM, SIGKILL after 5 s. The runner outlives it just long enough to record the end."""
        folder = launch_dir(launch)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cancelled").touch()
        pid = _read_pid(folder)
        if pid is None or (folder / "exit.json").exists():
            return
        runner, group = pid
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _group_alive(group):
                    break
                time.sleep(0.05)
            if not _group_alive(group):
                break
        deadline = time.monotonic() + 2.0
        while _alive(runner) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(runner):
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner, signal.SIGKILL)

    def inventory(self) -> list[GpuDevice]:
        return nvml_gpus()
