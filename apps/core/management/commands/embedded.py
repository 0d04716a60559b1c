"""Run everything the embedded mode needs, in the foreground, until Ctrl-C:
the web server, a Celery worker, Celery beat and (unless MLFLOW_TRACKING_URI is set) a
local `mlflow server` on a SQLite store under the data directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Start the portal, a Celery worker and beat, and a local MLflow server; Ctrl-C stops them all."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PLINTH_PORT", "8000")))

    def handle(self, *args: Any, **options: Any) -> None:
        data = Path(settings.DATA_DIR)
        (data / "logs").mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ, PLINTH_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
        procs: list[tuple[str, subprocess.Popen[bytes]]] = []

        def start(name: str, argv: list[str]) -> None:
            # Each child in its own process group, so Ctrl-C reaches us once and we stop them in order.
            proc = subprocess.Popen(argv, env=env, start_new_session=True)
            procs.append((name, proc))

        mlflow_note = settings.MLFLOW_TRACKING_URI
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            port = settings.MLFLOW_TRACKING_URI.rsplit(":", 1)[-1].strip("/")
            (data / "mlflow-artifacts").mkdir(exist_ok=True)
            start(
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
                    port,
                    "--workers",
                    "1",
                ],
            )
            mlflow_note += " (local, started here)"
        start(
            "worker",
            [
                str(bin_dir / "celery"),
                "-A",
                "portal",
                "worker",
                "-l",
                "INFO",
                "--concurrency",
                "2",
                "-n",
                "plinth-embedded@%h",
            ],
        )
        start(
            "beat",
            [str(bin_dir / "celery"), "-A", "portal", "beat", "-l", "INFO", "--pidfile", str(data / "celerybeat.pid")],
        )
        port = options["port"]
        start("web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"])

        self._wait_for(f"http://127.0.0.1:{port}/healthz", 30)
        # A new MLflow store takes a while to migrate; say so rather than look broken.
        if not self._wait_for(f"{settings.MLFLOW_TRACKING_URI.rstrip('/')}/health", 90):
            mlflow_note += " — still starting; pages show a banner and tasks retry until it answers"
        password = settings.PLINTH_DEMO_PASSWORD
        self.stdout.write(self.style.SUCCESS(f"\nPlinth is running at http://127.0.0.1:{port}/\n"))
        self.stdout.write(f"  MLflow:     {mlflow_note}\n  Data:       {data}\n")
        self.stdout.write(
            f"  Demo logins (password {password!r}): lin (lead of team demo), ada (member), root (platform admin),\n"
            "              vic (not in a team yet: sign in as lin and add vic as a viewer from the team page)\n"
            "  Ctrl-C stops everything.\n"
        )
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for name, proc in procs:
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping everything.")
                        stopping, exit_code = True, 1
                        break
                time.sleep(0.5)
        finally:
            self._stop_all(procs)
        if exit_code:
            sys.exit(exit_code)

    def _wait_for(self, url: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own local URL
                    return True
            except OSError:
                time.sleep(0.5)
        return False

    def _stop_all(self, procs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
        for _name, proc in reversed(procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.stdout.write("Stopped.")
