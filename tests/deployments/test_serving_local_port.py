"""The local backend's probe answers "up" only for its own model server: when another
process holds the revision's port (a server of another run that took it at the same
moment), its /ping is not taken for the revision's. No MLflow here: a tiny HTTP server
that answers 200 to every GET stands in for a model server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.deployments.models import Revision
from apps.deployments.serving.local import LocalServing, ServerRecord, _start_ticks, revision_dir

PINGER = """
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int, deadline: float = 20.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _spawn(argv: list[str], started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(proc)
    return proc


def _record(revision: Revision, pid: int, port: int) -> None:
    folder = revision_dir(revision)
    folder.mkdir(parents=True, exist_ok=True)
    start = _start_ticks(pid)
    assert start is not None
    ServerRecord(pid, start, port, 0).write(folder)


def test_a_ping_from_another_process_on_the_port_is_not_taken_for_the_revisions_server(
    settings: Any, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    settings.DATA_DIR = tmp_path
    port = _free_port()
    foreign = _spawn([sys.executable, "-c", PINGER, str(port)], processes)
    assert _listening(port)
    # The revision's own server: alive, but (still) not listening; another answers on its port.
    ours = _spawn([sys.executable, "-c", "import time; time.sleep(120)"], processes)
    revision = Revision(deployment_id=7, number=1, version=1)
    _record(revision, ours.pid, port)
    probe = LocalServing().probe(revision)
    assert probe.state == "starting", probe

    # The same server recorded as the revision's own is up.
    mine = Revision(deployment_id=7, number=2, version=1)
    _record(mine, foreign.pid, port)
    assert LocalServing().probe(mine).state == "up"
