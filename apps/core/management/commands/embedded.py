"""Run everything the embedded mode needs, in the foreground, until Ctrl-C: the web
server (gunicorn, as in production), a Celery worker, Celery beat and (unless
MLFLOW_TRACKING_URI is set) a local `mlflow server` on a SQLite store under the data
directory.

The runner supervises them. Each part runs under `apps.core.guard` as the leader of its own
process group; a part that exits is restarted with exponential backoff (1 s doubling to
60 s, back to 1 s once it has run for a minute) and logged, and the rest keep running.
Whatever ends the runner ends the parts: Ctrl-C, SIGTERM or SIGHUP at any moment (the
handlers are installed before the first part starts), a crash (a `finally`), and `kill -9`
(Linux sends each guard SIGTERM when the runner dies; the guard ends its whole group).
One runner per data directory: `embedded.pid` there is locked (flock) for the runner's
life and names its PID; `embedded.children.json` lists the process groups it started, so a
runner that finds a dead one's groups still alive ends them before starting its own.

What it prints is for a person at a terminal: a line as each part starts and as each one
answers, a "still waiting for …" line while one does not, and the banner with the URL and
the demo logins only once the web server, MLflow and a worker (a task round trip) all
answer. The worker and beat log at WARNING unless PLINTH_LOG_LEVEL says otherwise, and
MLflow's server then leaves out its access log, so routine lines (beat sends a task every
few seconds, each of them calls MLflow) do not scroll the banner away.

Deployments on the local backend run a model server per revision, which the worker starts
in a session of its own: the runner ends every one of them when it stops (and, at start,
any that a runner killed with `kill -9` left behind)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.core.guard import end_group, group_members, parent_death_signal

LOCK_FILE = "embedded.pid"
CHILDREN_FILE = "embedded.children.json"
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_SECONDS = 60.0  # a part that ran this long before exiting restarts after BACKOFF_FIRST again
STOP_SECONDS = 20.0  # how long the parts get to stop before they are killed
PROGRESS_SECONDS = 15.0  # how often "still waiting for …" is printed while a part does not answer
HEARTBEAT_SECONDS = 10.0  # how often the runner sends the worker a heartbeat task until one comes back
WEB_WORKERS = 2  # gunicorn worker processes of the web part
WEB_THREADS = 4  # threads per worker (gthread)
QUIET_LEVEL = "WARNING"  # the worker's and beat's log level unless PLINTH_LOG_LEVEL is set
# Why a part can take a while the first time, printed with its "still waiting" line.
SLOW_REASON = {"mlflow": "its first start creates and migrates its database, about a minute"}


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22); None if
    there is no such process. With the PID it identifies a process across PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class Part:
    """One supervised part of the stack and its restart state."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = BACKOFF_FIRST
    restarts: int = 0
    record: dict[str, Any] = field(default_factory=dict)


class Command(BaseCommand):
    help = "Start the portal, a Celery worker and beat, and a local MLflow server; Ctrl-C stops them all."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PLINTH_PORT", "8000")))

    def handle(self, *args: Any, **options: Any) -> None:
        self._stopping = False

        def stop(*_: Any) -> None:
            self._stopping = True

        # First of all, so that a signal at any later moment stops the parts started so far.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop)
        data = Path(settings.DATA_DIR)
        (data / "logs").mkdir(parents=True, exist_ok=True)
        lock = self._lock(data)
        parts: list[Part] = []
        try:
            self._end_leftovers(data)
            parts = self._plan(data, options["port"])
            for part in parts:
                if self._stopping:
                    break
                self._start(part, data, parts)
            self._supervise(parts, data, options["port"])
        finally:
            self._stop_all(parts)
            self._stop_model_servers("Stopped")
            (data / CHILDREN_FILE).unlink(missing_ok=True)
            os.close(lock)  # releases the flock

    # --- one runner per data directory --------------------------------------------------
    def _lock(self, data: Path) -> int:
        """Hold an exclusive flock on `embedded.pid` (it dies with the process, however
        the process dies) and write our PID into it; CommandError naming the holder when
        another runner has it."""
        fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CommandError(
                f"Another embedded runner (PID {holder}) is already running on the data directory {data}. "
                f"Stop it first (Ctrl-C in its terminal, or `kill {holder}`), or set another PLINTH_DATA_DIR."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _end_leftovers(self, data: Path) -> None:
        """End the process groups a previous runner recorded and left alive (it was killed
        before it could stop them). A group is ours if its leader is gone (its number cannot
        be reused while any member lives) or is the very process recorded (same start time)."""
        self._stop_model_servers("Ended", " left running by a previous runner")
        path = data / CHILDREN_FILE
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        ended = 0
        for record in records if isinstance(records, list) else []:
            pgid, start = int(record.get("pgid", 0)), record.get("start")
            if pgid <= 1 or not group_members(pgid):
                continue
            leader_start = process_start_time(pgid)
            if leader_start is not None and leader_start != start:
                continue  # the number belongs to someone else now
            end_group(pgid, grace=5.0)
            ended += 1
        path.unlink(missing_ok=True)
        if ended:
            self.stderr.write(f"Ended {ended} process group(s) left running by a previous runner.")

    def _stop_model_servers(self, verb: str, why: str = "") -> None:
        """End the deployments' model servers of this data directory (the worker starts
        them in sessions of their own, outside the parts' groups). The reconciler starts
        again, on the next run, what should serve."""
        from apps.deployments.serving.local import stop_all_model_servers

        ended = stop_all_model_servers()
        if ended:
            self.stderr.write(f"{verb} {ended} model server(s){why}.")

    # --- the parts ------------------------------------------------------------------------
    def _plan(self, data: Path, port: int) -> list[Part]:
        bin_dir = Path(sys.executable).parent
        parts = []
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow_port = settings.MLFLOW_TRACKING_URI.rsplit(":", 1)[-1].strip("/")
            (data / "mlflow-artifacts").mkdir(exist_ok=True)
            parts.append(
                Part(
                    "mlflow",
                    [
                        str(bin_dir / "mlflow"),
                        "server",
                        "--backend-store-uri",
                        f"sqlite:///{data / 'mlflow.sqlite3'}",
                        "--artifacts-destination",
                        str(data / "mlflow-artifacts"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        mlflow_port,
                        "--workers",
                        "1",
                        *mlflow_quiet_options(),
                    ],
                )
            )
        celery = str(bin_dir / "celery")
        level = celery_log_level()
        worker = [celery, "-A", "portal", "worker", "-l", level, "--concurrency", "2", "-n", "plinth-embedded@%h"]
        parts.append(Part("worker", worker))
        parts.append(
            Part("beat", [celery, "-A", "portal", "beat", "-l", level, "--pidfile", str(data / "celerybeat.pid")])
        )
        parts.append(Part("web", web_argv(bin_dir, port)))
        return parts

    def _start(self, part: Part, data: Path, parts: list[Part]) -> None:
        env = dict(os.environ, PLINTH_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
        if part.name in ("worker", "beat"):
            env["PLINTH_LOG_LEVEL"] = celery_log_level()
        if not os.environ.get("PLINTH_MLFLOW_STORE_URI") and any(p.name == "mlflow" for p in parts):
            # The portal reads histories from its own MLflow's store directly (read-only).
            env["PLINTH_MLFLOW_STORE_URI"] = f"sqlite:///{data / 'mlflow.sqlite3'}"
        # The guard leads a new session and process group; Linux SIGTERMs it when we die.
        part.proc = subprocess.Popen(
            [sys.executable, "-m", "apps.core.guard", *part.argv],
            env=env,
            cwd=settings.BASE_DIR,
            start_new_session=True,
            preexec_fn=parent_death_signal(),  # the runner starts every part from its main thread
        )
        part.started_at = time.monotonic()
        part.restart_at = None
        part.record = {"name": part.name, "pgid": part.proc.pid, "start": process_start_time(part.proc.pid)}
        records = [p.record for p in parts if p.proc is not None and p.record]
        tmp = data / f"{CHILDREN_FILE}.tmp"
        tmp.write_text(json.dumps(records))
        tmp.replace(data / CHILDREN_FILE)
        if not part.restarts:
            self.stdout.write(f"  started {part.name} (PID {part.proc.pid})")

    def _supervise(self, parts: list[Part], data: Path, port: int) -> None:
        """Until asked to stop: restart parts that exit, with backoff; report each part as
        it answers, and print the banner once all of them do."""
        waiting = Readiness(port, own_mlflow=any(p.name == "mlflow" for p in parts))
        self.stdout.write("Waiting for the web server, MLflow and a worker to answer…")
        announced = False
        while not self._stopping:
            now = time.monotonic()
            for part in parts:
                if part.proc is not None and part.proc.poll() is not None:
                    self._schedule_restart(part, now)
                if part.proc is None and part.restart_at is not None and now >= part.restart_at:
                    part.restarts += 1
                    self._start(part, data, parts)
                    assert part.proc is not None
                    self.stderr.write(f"{part.name} restarted (restart {part.restarts}, PID {part.proc.pid}).")
            if not announced:
                for line in waiting.poll(now):
                    self.stdout.write(line)
                if waiting.all_answer():
                    announced = True
                    self._announce(port, data, waiting.own_mlflow, waiting.elapsed(now))
            time.sleep(0.3)

    def _schedule_restart(self, part: Part, now: float) -> None:
        assert part.proc is not None
        code, ran = part.proc.returncode, now - part.started_at
        # Whatever the part left behind in its group (it was killed before it could stop them).
        end_group(part.proc.pid, grace=2.0)
        if ran >= STABLE_SECONDS:
            part.backoff = BACKOFF_FIRST
        part.restart_at = now + part.backoff
        self.stderr.write(
            f"{part.name} exited with status {code} after {ran:.0f} s; restarting it in {part.backoff:g} s. "
            "The rest keeps running."
        )
        part.backoff = min(part.backoff * 2, BACKOFF_MAX)
        part.proc = None

    def _announce(self, port: int, data: Path, own_mlflow: bool, took: float) -> None:
        password = settings.PLINTH_DEMO_PASSWORD
        mlflow_note = settings.MLFLOW_TRACKING_URI + (" (local, started here)" if own_mlflow else "")
        self.stdout.write(
            self.style.SUCCESS(f"\nPlinth is running at http://127.0.0.1:{port}/  (ready in {took:.0f} s)\n")
        )
        self.stdout.write(f"  MLflow:     {mlflow_note}\n  Data:       {data}\n")
        self.stdout.write(
            f"  Demo logins (password {password!r}): lin (lead of team demo), ada (member), root (platform admin),\n"
            "              vic (not in a team yet: sign in as lin and add vic as a viewer from the team page)\n"
            f"  Logs:       the worker and beat log at {celery_log_level()} (PLINTH_LOG_LEVEL changes it)\n"
            "  Ctrl-C stops everything.\n"
        )

    def _stop_all(self, parts: list[Part]) -> None:
        """SIGTERM every guard (each stops its own group), wait, then SIGKILL what is left
        of every group."""
        running = [p for p in parts if p.proc is not None]
        for part in reversed(running):
            assert part.proc is not None
            if part.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(part.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for part in running:
            assert part.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                part.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for part in running:
            assert part.proc is not None
            if part.proc.poll() is None or group_members(part.proc.pid):
                self.stderr.write(f"{part.name} did not stop within {STOP_SECONDS:g} s; killing its process group.")
            end_group(part.proc.pid, grace=0)
        self.stdout.write("Stopped.")


def web_argv(bin_dir: Path, port: int) -> list[str]:
    """The web part: gunicorn with the production configuration (portal/gunicorn.py), on
    127.0.0.1 only, WEB_WORKERS processes of WEB_THREADS threads each (the gateway and the
    pages mostly wait on model servers and MLflow), a short graceful stop. Its access log
    is left out at the quiet level, as MLflow's is."""
    argv = [
        str(bin_dir / "gunicorn"),
        "-c",
        "python:portal.gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WEB_WORKERS),
        "--threads",
        str(WEB_THREADS),
        "--graceful-timeout",
        "5",
    ]
    if celery_log_level() not in ("DEBUG", "INFO"):
        argv += ["--access-logfile", os.devnull]
    return [*argv, "portal.wsgi:application"]


def celery_log_level() -> str:
    """The worker's and beat's log level: PLINTH_LOG_LEVEL when set, else WARNING (their
    INFO lines are routine: a line per task, beat's every few seconds)."""
    return os.environ.get("PLINTH_LOG_LEVEL", "").strip().upper() or QUIET_LEVEL


def mlflow_quiet_options() -> list[str]:
    """At the quiet level MLflow's server leaves out its access log (a line for every call
    the portal makes); PLINTH_LOG_LEVEL=INFO or DEBUG keeps it."""
    if celery_log_level() in ("DEBUG", "INFO"):
        return []
    return ["--uvicorn-opts", "--no-access-log"]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own local URL
            return True
    except OSError:
        return False


class Readiness:
    """Which parts answer yet, asked the way a user's request would need them: the web
    server's /healthz, MLflow's /health, and a worker running a heartbeat task the runner
    sends (the broker and the database on the way). `poll` returns the lines to print."""

    def __init__(self, port: int, *, own_mlflow: bool) -> None:
        self.own_mlflow = own_mlflow
        self.started = time.monotonic()
        self.started_wall = timezone.now()
        self.urls = {
            "web": f"http://127.0.0.1:{port}/healthz",
            "mlflow": f"{settings.MLFLOW_TRACKING_URI.rstrip('/')}/health",
        }
        self.answered: dict[str, float] = {}
        self.next_progress = self.started + PROGRESS_SECONDS
        self.next_heartbeat = 0.0

    def elapsed(self, now: float) -> float:
        return now - self.started

    def all_answer(self) -> bool:
        return {"web", "mlflow", "worker"} <= set(self.answered)

    def poll(self, now: float) -> list[str]:
        lines = []
        for name, url in self.urls.items():
            if name not in self.answered and answers(url):
                self.answered[name] = now
                lines.append(f"  {name} answers ({self.elapsed(now):.0f} s)")
        if "worker" not in self.answered and self._worker_answers(now):
            self.answered["worker"] = now
            lines.append(f"  worker answers ({self.elapsed(now):.0f} s)")
        if now >= self.next_progress and not self.all_answer():
            self.next_progress = now + PROGRESS_SECONDS
            missing = [n for n in ("web", "mlflow", "worker") if n not in self.answered]
            why = "; ".join(f"{n}: {SLOW_REASON[n]}" for n in missing if n in SLOW_REASON)
            lines.append(
                f"  still waiting for {', '.join(missing)} ({self.elapsed(now):.0f} s){f' — {why}' if why else ''}"
            )
        return lines

    def _worker_answers(self, now: float) -> bool:
        """A heartbeat row newer than this runner's start: a worker took a task from the
        broker and wrote to the database. The runner sends one every HEARTBEAT_SECONDS."""
        from apps.core.models import WorkerHeartbeat

        try:
            if WorkerHeartbeat.objects.filter(seen_at__gte=self.started_wall).exists():
                return True
            if now >= self.next_heartbeat:
                self.next_heartbeat = now + HEARTBEAT_SECONDS
                from apps.core.tasks import heartbeat

                heartbeat.apply_async(retry=False)  # fails fast while the broker is not there
        except Exception:  # the broker or the database is not there yet: asked again later
            return False
        return False
