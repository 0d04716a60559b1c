"""The `local` serving backend: one `mlflow models serve` process per revision on this host.

Each revision gets a folder `<data dir>/serving/<deployment id>/r<number>/` holding:

  model/       the pinned version's artifacts, downloaded once from the registry
  server.log   the model server's output (appended across restarts)
  pid          "<pid> <start ticks> <port> <log offset>" of the running server
  stopped      present once `stop` ended it for good (probe: gone)
  failed       the reason when the version cannot be served at all (probe: failed)
  bin/uvicorn  runs uvicorn on the revision's environment's interpreter (see model_server_env)

The server is MLflow's scoring server (`<python> -m mlflow models serve --env-manager local`,
which runs uvicorn with one worker) on the interpreter of the revision's environment
(apps.environments.runtime.python_for: a built environment's virtualenv, or the portal's),
on a free port of PLINTH_SERVING_PORTS at 127.0.0.1, started in a session and process group
of its own with an allow-listed environment (never the portal's secrets), so that `stop` can
end it and everything it started at once. Like local launches, the state is read from those
files and the process table, so it survives worker restarts; restarting a crashed server is
the reconciler's job (probe says crashed, it calls start).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import urllib3
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.compute.local import HOST_ENV_NAMES, HOST_ENV_PREFIXES, tail_file
from apps.compute.registry import check_enabled
from apps.core.deadline import BudgetSpent, cap_timeout
from apps.core.errors import Unavailable
from apps.core.guard import group_members
from apps.deployments import stats
from apps.deployments.serving.base import Answer, MetricsSeries, Probe, RevisionMetrics, ServingUnavailable
from apps.environments.runtime import python_for

if TYPE_CHECKING:
    from apps.deployments.models import Deployment, Revision

LOG_LINES_IN_REASON = 20
PING_TIMEOUT = 1.0  # seconds: a healthy server answers /ping at once
CONNECT_TIMEOUT = 2.0  # seconds to open a connection to a model server on this host
PREDICT_TIMEOUT = 60.0  # seconds for one prediction (the model server's own -t as well)
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
# What the server's log says once uvicorn listens: after that an exit is a crash, not a
# model that does not load.
UP_MARKER = b"Uvicorn running on"
PORT_TAKEN = b"address already in use"
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit)(?::|$)")  # a traceback's last line
CLI_EXIT = "returned non zero return code"  # MLflow's CLI about the server it ran


class NotReached(ServingUnavailable):
    """The request never reached the model server (connection refused or not opened in
    time): sending it to another revision, or again once the server restarted, is safe."""


def port_range() -> range:
    """The ports local model servers may listen on, from PLINTH_SERVING_PORTS ("first-last",
    inclusive). Raises ImproperlyConfigured for anything else."""
    text = str(settings.PLINTH_SERVING_PORTS).strip()
    try:
        first, last = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise ImproperlyConfigured(f"PLINTH_SERVING_PORTS={text!r}: write a range such as 18100-18999") from None
    if not 1024 <= first <= last <= 65535:
        raise ImproperlyConfigured(f"PLINTH_SERVING_PORTS={text!r}: need 1024 <= first <= last <= 65535")
    return range(first, last + 1)


def serving_root() -> Path:
    """`<data dir>/serving`: every local model server's folder is below it."""
    return Path(settings.DATA_DIR) / "serving"


def revision_dir(revision: Revision) -> Path:
    """`<data dir>/serving/<deployment id>/r<number>`: the revision's model, log and pid file."""
    return serving_root() / str(revision.deployment_id) / f"r{revision.number}"


def model_server_env(
    folder: Path, host_env: Mapping[str, str] | None = None, python: str | None = None
) -> dict[str, str]:
    """The complete environment of a model server: an allow-list, never the portal's own
    (which holds PLINTH_SECRET_KEY, DATABASE_URL, MLflow and OIDC credentials).

    From the host (`host_env`, default os.environ) only PATH, LANG, LANGUAGE, LC_* and TZ;
    HOME and TMPDIR inside the revision's folder (`folder`/home, `folder`/tmp, created here);
    PYTHONUNBUFFERED=1. `python` is the interpreter of the revision's environment (default:
    the portal's): PATH starts with `folder`/bin (a `uvicorn` that runs on `python`: MLflow's
    CLI starts the scoring server as `uvicorn …` found on PATH, and the portal's own
    `uvicorn` script would run it on the portal's interpreter), then that interpreter's
    virtualenv bin, then the portal's (`--env-manager local`: the server runs in that
    environment). VIRTUAL_ENV names the environment's virtualenv. No MLflow variables: the
    server reads the model from its folder, not the registry."""
    host = os.environ if host_env is None else host_env
    python = python or sys.executable
    env = {name: value for name, value in host.items() if name in HOST_ENV_NAMES or name.startswith(HOST_ENV_PREFIXES)}
    shims = folder / "bin"
    shims.mkdir(parents=True, exist_ok=True)
    uvicorn = shims / "uvicorn"
    script = f'#!/bin/sh\nexec {shlex.quote(python)} -m uvicorn "$@"\n'
    if not uvicorn.exists() or uvicorn.read_text() != script:
        tmp = shims / "uvicorn.tmp"
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, uvicorn)
    path = [str(shims), str(Path(python).parent)]
    if str(Path(sys.executable).parent) not in path:
        path.append(str(Path(sys.executable).parent))
    env["PATH"] = os.pathsep.join([*path, env.get("PATH") or os.defpath])
    prefix = Path(python).parent.parent
    if python != sys.executable and (prefix / "pyvenv.cfg").exists():
        env["VIRTUAL_ENV"] = str(prefix)
    elif sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    for name, sub in (("HOME", "home"), ("TMPDIR", "tmp")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(folder / sub)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), None when there is no such live process
    (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


class ServerRecord:
    """The pid file of a revision's model server: pid (= its process group), the process's
    start time (to tell it from a later process with the same number), port, and where its
    part of server.log begins."""

    def __init__(self, pid: int, start: int, port: int, log_offset: int) -> None:
        self.pid, self.start, self.port, self.log_offset = pid, start, port, log_offset

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def read(cls, folder: Path) -> ServerRecord | None:
        try:
            pid, start, port, offset = (int(x) for x in (folder / "pid").read_text().split())
        except (OSError, ValueError):
            return None
        return cls(pid, start, port, offset)

    def write(self, folder: Path) -> None:
        tmp = folder / "pid.tmp"
        tmp.write_text(f"{self.pid} {self.start} {self.port} {self.log_offset}\n")
        os.replace(tmp, folder / "pid")

    def alive(self) -> bool:
        """The server process itself still runs (not a zombie, not a reused number)."""
        return _start_ticks(self.pid) == self.start

    def group_left(self) -> list[int]:
        """PIDs of its process group still alive (the server's own children included). A
        group whose leader is gone is still ours: its number is not reused while any member
        lives. A live leader with another start time is someone else's: nothing."""
        leader = _start_ticks(self.pid)
        if leader is not None and leader != self.start:
            return []
        return group_members(self.pid)


def _listening_sockets(port: int) -> set[str]:
    """The socket inodes listening on TCP `port` (any address, IPv4 or IPv6), from the
    kernel's tables in /proc/net (Linux), as "socket:[<inode>]" like /proc/<pid>/fd shows."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode: state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def _group_listens(pgid: int, port: int) -> bool:
    """Whether a process of group `pgid` (a model server and its workers) holds the socket
    listening on `port`: the server answering there is this one, not a process of another
    run that took the port at the same moment."""
    sockets = _listening_sockets(port)
    if not sockets:
        return False
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                        return True
    return False


def end_server(folder: Path, grace: float = STOP_GRACE) -> bool:
    """End the model server recorded in `folder` and its whole process group: SIGTERM, then
    SIGKILL after `grace` seconds. Returns whether anything was running. Idempotent."""
    record = ServerRecord.read(folder)
    if record is None or not record.group_left():
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)
        _reap(record.pid)
        deadline = time.monotonic() + wait
        while record.group_left() and time.monotonic() < deadline:
            time.sleep(0.05)
            _reap(record.pid)
        if not record.group_left():
            break
    return True


def stop_all_model_servers() -> int:
    """End every local model server of this data directory (the embedded runner's shutdown
    and start-up: no model server outlives `make run`). Each is marked stopped (probe: gone),
    so the reconciler starts again what should serve. Returns how many were running."""
    ended = 0
    root = serving_root()
    if not root.exists():
        return 0
    for pid_file in sorted(root.glob("*/r*/pid")):
        folder = pid_file.parent
        (folder / "stopped").touch()
        if end_server(folder):
            ended += 1
    return ended


# Model servers this process started, so that it reaps them when they exit (no zombies in
# a long-lived worker); the files, not this, are the record.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _reap(pid: int | None = None) -> None:
    with _children_lock:
        for child_pid, proc in list(_children.items()):
            if (pid is None or child_pid == pid) and proc.poll() is not None:
                del _children[child_pid]


def _pool() -> urllib3.PoolManager:
    """One pool of keep-alive connections per process towards the model servers on this
    host (urllib3 straight: this is the gateway's hot path, and requests' layer on top of
    it costs CPU on every call). No retries: the caller decides."""
    return urllib3.PoolManager(num_pools=64, maxsize=32, retries=False, block=False)


class LocalServing:
    """Model-server processes on this host, one per revision (see the module docstring)."""

    name = "local"

    def __init__(self) -> None:
        self.pool = _pool()

    # -- start -----------------------------------------------------------------------------
    def start(self, revision: Revision) -> None:
        """Make the revision's model server run: download the pinned version's artifacts
        (once), pick a free port of PLINTH_SERVING_PORTS, start `mlflow models serve`, and
        record pid, port and endpoint on the revision (a conditional update: a revision
        that is no longer live gets its server stopped again). Idempotent: a running server
        is left alone (its pid and endpoint are written to the row if the row lacks them).
        A version the registry does not have is recorded as failed (probe says why).
        Raises ServingUnavailable when MLflow cannot be reached, BackendDisabled when the
        local backend is switched off."""
        from apps.deployments.models import LIVE_REVISION_STATUSES, Revision

        check_enabled(self.name)
        folder = revision_dir(revision)
        folder.mkdir(parents=True, exist_ok=True)
        with _flock(folder / ".lock"):
            _reap()
            record = ServerRecord.read(folder)
            if record is None or not record.alive():
                model_dir = self._fetch_model(revision, folder)
                if model_dir is None:
                    return  # recorded as failed
                (folder / "stopped").unlink(missing_ok=True)
                (folder / "failed").unlink(missing_ok=True)
                try:
                    python = python_for(revision.environment)
                except ValueError as exc:  # its build is not ready (the rollout checks first)
                    (folder / "failed").write_text(str(exc))
                    return
                with _flock(serving_root() / ".ports.lock"):
                    record = self._spawn(folder, model_dir, self._free_port(), python)
            elif revision.pid == record.pid and revision.endpoint == record.endpoint:
                return  # running, and the row knows it
        updated = Revision.objects.filter(pk=revision.pk, status__in=LIVE_REVISION_STATUSES).update(
            pid=record.pid, port=record.port, endpoint=record.endpoint
        )
        if not updated:  # retired or deleted while it started
            self.stop(revision)
            return
        revision.pid, revision.port, revision.endpoint = record.pid, record.port, record.endpoint

    def _fetch_model(self, revision: Revision, folder: Path) -> Path | None:
        """The version's artifacts in `folder`/model (downloaded into a temporary folder
        and renamed, so a half download is never used); None when the registry has no such
        version (the reason goes to `folder`/failed)."""
        import mlflow
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        from apps.tracking.gateway import gateway

        target = folder / "model"
        if (target / "MLmodel").exists():
            return target
        try:
            gateway().ping()  # fails fast when MLflow is down (the download would retry for minutes)
        except Unavailable as exc:
            raise ServingUnavailable(exc.message) from exc
        uri = f"models:/{revision.deployment.model_name}/{revision.version}"
        # MLflow resolves a models:/ URI through its *registry* URI, which download_artifacts'
        # tracking_uri does not set (unset, it falls back to a sqlite file in the working
        # folder): Plinth's registry is its tracking server. Its tracking URI too: resolving
        # a version makes an MlflowClient without one, which would create that sqlite file.
        mlflow.set_registry_uri(settings.MLFLOW_TRACKING_URI)
        mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
        scratch = Path(tempfile.mkdtemp(prefix="download-", dir=folder))
        try:
            try:
                path = Path(
                    download_artifacts(
                        artifact_uri=uri, dst_path=str(scratch), tracking_uri=settings.MLFLOW_TRACKING_URI
                    )
                )
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    (folder / "failed").write_text(f"cannot fetch {uri}: {exc.message}")
                    return None
                raise ServingUnavailable(f"cannot fetch {uri} from MLflow: {exc.message}") from exc
            except (OSError, requests.RequestException) as exc:
                raise ServingUnavailable(f"cannot fetch {uri} from MLflow: {exc}") from exc
            if not (path / "MLmodel").exists():
                (folder / "failed").write_text(f"{uri} has no MLmodel file: it is not an MLflow model")
                return None
            shutil.rmtree(target, ignore_errors=True)
            os.replace(path, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def _free_port(self) -> int:
        """The first port of the range that no recorded live server holds and that can be
        bound now. The caller holds the ports lock until the pid file names the port."""
        taken = set()
        for pid_file in serving_root().glob("*/r*/pid"):
            record = ServerRecord.read(pid_file.parent)
            if record is not None and record.alive():
                taken.add(record.port)
        for port in port_range():
            if port in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise ServingUnavailable(f"no free port left in PLINTH_SERVING_PORTS={settings.PLINTH_SERVING_PORTS}")

    def _spawn(self, folder: Path, model_dir: Path, port: int, python: str | None = None) -> ServerRecord:
        """Start `<python> -m mlflow models serve` for `model_dir` on `port` (python: the
        revision's environment's interpreter, default the portal's), its output appended
        to `folder`/server.log; the pid file is written."""
        python = python or sys.executable
        argv = [
            python,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
            "-t",
            str(int(PREDICT_TIMEOUT)),
        ]
        log_path = folder / "server.log"
        with open(log_path, "ab") as log:
            offset = log.tell()
            log.write(f"plinth: starting the model server on port {port}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=folder,
                    env=model_server_env(folder, python=python),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own session and process group: `stop` ends all of it
                )
            except OSError as exc:
                raise ServingUnavailable(f"cannot start the model server: {exc}") from exc
        with _children_lock:
            _children[proc.pid] = proc
        record = ServerRecord(proc.pid, _start_ticks(proc.pid) or 0, port, offset)
        record.write(folder)
        return record

    # -- watch -------------------------------------------------------------------------------
    def probe(self, revision: Revision) -> Probe:
        """up: /ping answers 200 and the socket listening on the port is held by the server's
        own process group (not a process of another run that took the port at the same
        moment); starting: the process runs but does not answer yet; gone:
        nothing was started, or it was stopped; crashed: the process exited after it had
        come up (or could not bind its port); failed: it exited before it came up with an
        error in its log (the model does not load), or the version cannot be fetched —
        `message` has the log's last lines."""
        folder = revision_dir(revision)
        failed = folder / "failed"
        if failed.exists():
            return Probe("failed", failed.read_text())
        record = ServerRecord.read(folder)
        if record is None or (folder / "stopped").exists():
            return Probe("gone")
        _reap(record.pid)
        if record.alive():
            if not _group_listens(record.pid, record.port):
                # Not listening yet, or another process took the port between the check
                # for a free one and this server's bind (that server's /ping is not ours):
                # this one then exits on "address in use" and is reported crashed.
                return Probe("starting", endpoint=record.endpoint)
            try:
                answer = self.pool.request("GET", f"{record.endpoint}/ping", timeout=PING_TIMEOUT)
            except urllib3.exceptions.HTTPError:
                return Probe("starting", endpoint=record.endpoint)
            return Probe("up" if answer.status == 200 else "starting", endpoint=record.endpoint)
        output = self._output_since(folder, record)
        lines = output.decode("utf-8", errors="replace").splitlines()
        if UP_MARKER in output or PORT_TAKEN in output.lower() or b"Traceback" not in output:
            tail = "\n".join(lines[-LOG_LINES_IN_REASON:])
            return Probe("crashed", f"the model server (PID {record.pid}) exited.\n{tail}".strip())
        # The first exception is the model's (MLflow's CLI then raises its own about the
        # server's exit code): name it, with the log up to it.
        causes = [i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line) and CLI_EXIT not in line]
        end = causes[0] + 1 if causes else len(lines)
        cause = f": {lines[causes[0]].strip()}" if causes else ""
        tail = "\n".join(lines[max(0, end - LOG_LINES_IN_REASON) : end])
        return Probe("failed", f"the model server exited before it answered: the model does not load{cause}\n{tail}")

    @staticmethod
    def _output_since(folder: Path, record: ServerRecord) -> bytes:
        """The log written since this server was started (at most its last 64 KiB)."""
        try:
            with open(folder / "server.log", "rb") as handle:
                handle.seek(0, os.SEEK_END)
                start = max(record.log_offset, handle.tell() - 65536)
                handle.seek(start)
                return handle.read()
        except OSError:
            return b""

    def logs(self, revision: Revision, tail: int = 200) -> str:
        """The last `tail` lines of the revision's model-server log ("" before any start)."""
        return tail_file(revision_dir(revision) / "server.log", tail)

    # -- requests ----------------------------------------------------------------------------
    def predict(self, revision: Revision, body: bytes, content_type: str = "application/json") -> Answer:
        """POST `body` to the revision's /invocations. Returns the server's answer whatever
        its status (a 4xx says what is wrong with the input). Raises NotReached when the
        connection cannot be opened (safe to retry), ServingUnavailable on a timeout or when
        the revision has no server yet."""
        endpoint = revision.endpoint
        if not endpoint:
            record = ServerRecord.read(revision_dir(revision))
            if record is None:
                raise NotReached(f"revision {revision.number} has no model server yet")
            endpoint = record.endpoint
        try:
            connect, read = cap_timeout((CONNECT_TIMEOUT, PREDICT_TIMEOUT))
        except BudgetSpent as exc:  # within a web request whose time is used up
            raise ServingUnavailable(f"no time left in this request to ask revision {revision.number}") from exc
        started = time.perf_counter()
        try:
            response = self.pool.request(
                "POST",
                f"{endpoint}/invocations",
                body=body,
                headers={"Content-Type": content_type},
                timeout=urllib3.Timeout(connect=connect, read=read),
            )
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ProtocolError) as exc:
            # Refused, not opened in time, or dropped before an answer: the prediction can go again.
            raise NotReached(f"the model server of revision {revision.number} does not answer") from exc
        except urllib3.exceptions.HTTPError as exc:  # a read timeout: the request may have run
            raise ServingUnavailable(
                f"the model server of revision {revision.number} did not answer in time ({type(exc).__name__})"
            ) from exc
        latency = (time.perf_counter() - started) * 1000.0
        return Answer(
            status=response.status,
            body=response.data,
            content_type=response.headers.get("Content-Type", "application/json"),
            latency_ms=latency,
        )

    def set_traffic(self, deployment: Deployment, split: Mapping[int, int]) -> None:
        """Nothing to do: the gateway routes by the revisions' `traffic` column."""

    # -- stop --------------------------------------------------------------------------------
    def stop(self, revision: Revision) -> None:
        """End the revision's model server for good (SIGTERM to its process group, SIGKILL
        after STOP_GRACE seconds) and forget its pid on the row. Idempotent."""
        from apps.deployments.models import Revision

        folder = revision_dir(revision)
        if not folder.exists():
            return
        with _flock(folder / ".lock"):
            (folder / "stopped").touch()
            record = ServerRecord.read(folder)
            end_server(folder)
        if record is not None:
            Revision.objects.filter(pk=revision.pk, pid=record.pid).update(pid=None)

    def delete(self, deployment: Deployment) -> None:
        """End every model server of the deployment and remove its folder. Idempotent."""
        folder = serving_root() / str(deployment.pk)
        if not folder.exists():
            return
        for revision_folder in folder.glob("r*"):
            (revision_folder / "stopped").touch()
            end_server(revision_folder)
        shutil.rmtree(folder, ignore_errors=True)

    # -- metrics -----------------------------------------------------------------------------
    def metrics(self, revisions: Sequence[Revision], since: datetime) -> dict[int, RevisionMetrics]:
        """Requests per revision since `since`, from the gateway's RequestStats (stats.metrics)."""
        return stats.metrics(revisions, since)

    def series(self, revisions: Sequence[Revision], since: datetime) -> dict[int, MetricsSeries]:
        """Per-minute series per revision since `since` (stats.series)."""
        return stats.series(revisions, since)
