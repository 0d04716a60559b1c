"""The local backend says how a process ended in the words the launch pages use: a launch
ended by a signal it was not cancelled with reads "ended by SIGTERM" in its reason and its
ended field alike, a cancelled one "cancelled (SIGTERM)" (never "killed by signal", never
"exit code -15")."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from apps.compute.base import Observation
from apps.compute.local import LocalBackend, launch_dir
from apps.core.wording import exit_status


def observe(settings: Any, tmp_path: Path, code: int, *, cancelled: bool = False) -> Observation:
    """What the backend observes of a launch whose runner recorded exit code `code`."""
    settings.DATA_DIR = tmp_path
    launch: Any = SimpleNamespace(pk=41, local_host="")
    folder = launch_dir(launch)
    folder.mkdir(parents=True)
    (folder / "exit.json").write_text(json.dumps({"exit_code": code, "finished_at": time.time()}))
    (folder / "output.log").write_text("epoch 1\nepoch 2\n")
    if cancelled:
        (folder / "cancelled").touch()
    seen = LocalBackend(max_concurrent=1)._observe(launch)
    assert seen is not None
    return seen


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-signal.SIGTERM, "ended by SIGTERM"),
        (-signal.SIGKILL, "ended by SIGKILL (possibly out of memory)"),
        (3, "exit code 3"),
    ],
)
def test_a_failed_launchs_reason_says_what_its_ended_field_says(
    settings: Any, tmp_path: Path, code: int, words: str
) -> None:
    seen = observe(settings, tmp_path, code)
    first, *tail = seen.reason.splitlines()
    assert seen.state == "failed" and seen.exit_code == code
    assert first == words and first.startswith(exit_status(code, seen.state)), first
    assert "killed" not in seen.reason and "exit code -" not in seen.reason
    assert tail == ["epoch 1", "epoch 2"]  # the output's last lines follow


def test_a_cancelled_launch_reads_cancelled_with_the_signal(settings: Any, tmp_path: Path) -> None:
    seen = observe(settings, tmp_path, -signal.SIGTERM, cancelled=True)
    assert (seen.state, seen.reason, seen.exit_code) == ("cancelled", "cancelled", -signal.SIGTERM)
    assert exit_status(seen.exit_code, seen.state) == "cancelled (SIGTERM)"
