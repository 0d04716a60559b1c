"""Run everything the embedded mode needs, in the foreground, until Ctrl-C: the web
server, a Celery worker, Celery beat and (unless MLFLOW_TRACKING_URI is set) a local
`mlflow server` on a SQLite store under the data directory.

The runner supervises them. Each part runs under `apps.core.guard` as the leader of its own
process group; a part that exits is restarted with exponential backoff (1 s doubling to
60 s, back to 1 s once it has run for a minute) and logged, and the rest keep running.
Whatever ends the runner ends the parts: Ctrl-C, SIGTERM or SIGHUP at any moment (the
handlers are installed before the first part starts), a crash (a `finally`), and `kill -9`
(Linux sends each guard SIGTERM when the runner dies; the guard ends its whole group).
One runner per data directory: `embedded.pid` there is locked (flock) for the runner's
life and names its PID; `embedded.children.json` lists the process groups it started, so a
runner that finds a dead one's groups still alive ends them before starting its own."""

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

from apps.core.guard import end_group, group_members, parent_death_signal

LOCK_FILE = "embedded.pid"
CHILDREN_FILE = "embedded.children.json"
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_SECONDS = 60.0  # a part that ran this long before exiting restarts after BACKOFF_FIRST again
STOP_SECONDS = 20.0  # how long the parts get to stop before they are killed


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
                    ],
                )
            )
        celery = str(bin_dir / "celery")
        worker = [celery, "-A", "portal", "worker", "-l", "INFO", "--concurrency", "2", "-n", "plinth-embedded@%h"]
        parts.append(Part("worker", worker))
        parts.append(
            Part("beat", [celery, "-A", "portal", "beat", "-l", "INFO", "--pidfile", str(data / "celerybeat.pid")])
        )
        parts.append(Part("web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]))
        return parts

    def _start(self, part: Part, data: Path, parts: list[Part]) -> None:
        env = dict(os.environ, PLINTH_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
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

    def _supervise(self, parts: list[Part], data: Path, port: int) -> None:
        """Until asked to stop: restart parts that exit, with backoff; announce the portal
        once it answers and MLflow once it does (or that it is still starting)."""
        web_url = f"http://127.0.0.1:{port}/healthz"
        mlflow_url = f"{settings.MLFLOW_TRACKING_URI.rstrip('/')}/health"
        own_mlflow = any(p.name == "mlflow" for p in parts)
        announced = False
        mlflow_deadline = time.monotonic() + 90
        mlflow_known = not own_mlflow
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
            if not announced and self._answers(web_url):
                announced = True
                self._announce(port, data, own_mlflow)
            if announced and not mlflow_known:
                if self._answers(mlflow_url):
                    mlflow_known = True
                    self.stdout.write(f"  MLflow is up at {settings.MLFLOW_TRACKING_URI}.\n")
                elif now > mlflow_deadline:
                    mlflow_known = True
                    self.stdout.write("  MLflow is still starting; pages show a banner until it is up.\n")
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

    def _announce(self, port: int, data: Path, own_mlflow: bool) -> None:
        password = settings.PLINTH_DEMO_PASSWORD
        mlflow_note = settings.MLFLOW_TRACKING_URI + (" (local, started here)" if own_mlflow else "")
        self.stdout.write(self.style.SUCCESS(f"\nPlinth is running at http://127.0.0.1:{port}/\n"))
        self.stdout.write(f"  MLflow:     {mlflow_note}\n  Data:       {data}\n")
        self.stdout.write(
            f"  Demo logins (password {password!r}): lin (lead of team demo), ada (member), root (platform admin),\n"
            "              vic (not in a team yet: sign in as lin and add vic as a viewer from the team page)\n"
            "  Ctrl-C stops everything.\n"
        )

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own local URL
                return True
        except OSError:
            return False

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
