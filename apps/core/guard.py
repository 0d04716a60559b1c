"""A child's keeper for the embedded runner: `python -m apps.core.guard <command...>`.

The runner starts each part of the stack (web, worker, beat, MLflow) through this, as the
leader of a process group of its own. The guard runs the command in that group and makes
sure that, whatever happens, nothing of it is left behind:

- when the runner dies, even by `kill -9`, Linux sends the guard SIGTERM (PR_SET_PDEATHSIG);
- on SIGTERM/SIGINT/SIGHUP the guard passes SIGTERM to the command, waits for it (up to
  10 s, then SIGKILL), then ends whatever of its group is left (anything it started:
  Celery's pool processes, the server MLflow's CLI launches): SIGTERM, then SIGKILL;
- when the command exits on its own (a crash), the rest of its group is ended the same way
  and the guard exits with the command's status, so the runner can restart it.

Only the standard library: it starts in a few milliseconds and knows nothing of Django."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
GRACE_SECONDS = 10.0


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that asks Linux to send `sig` to the child when the process that
    started it dies (prctl PR_SET_PDEATHSIG). None where that is not available (not Linux).
    The parent must start children from its main thread: Linux ties the signal to the
    thread that forked."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to import in the child
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group `pgid` (from /proc; Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses):
        # state ppid pgrp ...; a zombie is already dead.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int, spare: int | None = None) -> list[int]:
    """Send `sig` to every live process of group `pgid` but `spare`; returns their PIDs."""
    left = [pid for pid in group_members(pgid) if pid != spare]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return left


def end_group(pgid: int, grace: float = GRACE_SECONDS, spare: int | None = None) -> None:
    """SIGTERM every process of group `pgid` but `spare`, wait up to `grace` seconds for
    them to go, then SIGKILL the rest."""
    deadline = time.monotonic() + grace
    while signal_group(pgid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL, spare):
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    """Run `argv` as described above; returns its exit status (128 + N when signal N
    ended it), or 0 when the guard was asked to stop."""
    if not argv:
        print("usage: python -m apps.core.guard <command> [args...]", file=sys.stderr)
        return 2
    # The runner armed PR_SET_PDEATHSIG for this process before exec (it survives exec).
    me = os.getpid()
    pgid = os.getpgid(0)
    stopping = False
    started: list[subprocess.Popen[bytes]] = []

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # The command first, so it stops in order (Celery's warm shutdown stops its own
        # pool); whatever of the group outlives it is ended below.
        for child in started:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    # The command also gets SIGTERM when the guard dies, however it dies.
    proc = subprocess.Popen(argv, preexec_fn=parent_death_signal())  # the guard is single-threaded
    started.append(proc)
    if stopping:  # asked to stop while starting it
        proc.send_signal(signal.SIGTERM)
    # Poll rather than block in wait(): a blocking wait resumes after the signal handler
    # and would never notice that the grace period is over.
    deadline: float | None = None
    while proc.poll() is None:
        if stopping and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.1)
    code = proc.returncode
    end_group(pgid, grace=GRACE_SECONDS if stopping else 2.0, spare=me)
    return 0 if stopping else (code if code >= 0 else 128 - code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
