"""One time budget for a web request: gunicorn's worker timeout is PLINTH_WEB_TIMEOUT, and
the MLflow calls a page makes end (as a 503) before it, however slow MLflow is."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import User
from apps.core import deadline
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.conftest import client_for

ROOT = Path(__file__).resolve().parents[2]

READ = """
import json
from portal import gunicorn, settings
print(json.dumps({"gunicorn": gunicorn.timeout, "web": settings.PLINTH_WEB_TIMEOUT,
                  "budget": settings.PLINTH_WEB_MLFLOW_BUDGET, "mlflow": settings.MLFLOW_TIMEOUT}))
"""


def read_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLINTH_", "DJANGO_"))}
    clean.update(PLINTH_DATA_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", READ], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("web_timeout", ["20", "60", "300"])
def test_mlflow_calls_of_a_request_end_before_gunicorn_kills_the_worker(tmp_path: Path, web_timeout: str) -> None:
    result = read_settings(tmp_path, PLINTH_WEB_TIMEOUT=web_timeout)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["gunicorn"] == seen["web"] == int(web_timeout)
    # Room to render the 503 page after the last MLflow call gives up, and room for a call.
    assert seen["mlflow"] <= seen["budget"] <= seen["gunicorn"] - 5


def test_a_web_timeout_too_short_for_one_mlflow_call_is_refused_at_start(tmp_path: Path) -> None:
    result = read_settings(tmp_path, PLINTH_WEB_TIMEOUT="8", PLINTH_MLFLOW_TIMEOUT="5")
    assert result.returncode != 0
    assert "PLINTH_WEB_TIMEOUT=8" in result.stderr


@pytest.fixture
def silent_mlflow() -> Iterator[str]:
    """A loopback server that accepts connections and never answers (a stuck MLflow)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_outside_a_web_request_a_call_keeps_its_own_timeout() -> None:
    assert deadline.cap_timeout((5.0, 120.0)) == (5.0, 120.0)
    with deadline.budget(10):
        connect, read = deadline.cap_timeout((5.0, 120.0))
        assert connect == 5.0 and 9 < read <= 10
    with deadline.budget(0), pytest.raises(deadline.BudgetSpent):
        deadline.cap_timeout(5.0)


@pytest.mark.django_db
def test_a_page_reading_a_stuck_mlflow_answers_503_within_its_budget(
    settings: Any, silent_mlflow: str, ada: User, project: Project
) -> None:
    settings.MLFLOW_TRACKING_URI = silent_mlflow
    settings.MLFLOW_TIMEOUT = 30.0  # alone, each call would wait this long, and retry
    settings.PLINTH_WEB_MLFLOW_BUDGET = 1.0
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_id="1", mlflow_state=ExperimentState.LINKED)
    started = time.monotonic()
    response = client_for(ada).get("/runs/demo/demo/")
    took = time.monotonic() - started
    assert response.status_code == 503
    assert took < settings.MLFLOW_TIMEOUT / 2, f"the page waited {took:.1f} s"


def test_a_worker_reading_a_stuck_mlflow_waits_its_full_read_timeout(silent_mlflow: str) -> None:
    gateway = MlflowGateway(silent_mlflow, timeout=0.5)
    gateway.history_timeout = 1.0
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable):
        gateway.get_history_bulk(["r1"], "loss")
    assert time.monotonic() - started >= 2.0  # two attempts of 1 s: no budget outside a request
