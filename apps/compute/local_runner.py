"""Runs one launch's command on the worker host, detached from the Celery worker.

    python -m apps.compute.local_runner <launch dir> <max seconds> <work dir> -- <argv...>

The runner double-forks so the worker never has to reap it (no zombies, and the job keeps
running across a worker restart), starts the command in its own process group (the one
`cancel` kills) with <work dir> as its working directory and the runner's own environment
(the allow-list the backend built), streams output to <launch dir>/output.log, and writes
<launch dir>/exit.json when the command ends. No shell is involved: argv is executed as given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def end_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """SIGTERM the command's process group, SIGKILL it after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def run(launch_dir: Path, max_seconds: float, argv: list[str], workdir: Path | None = None) -> int:
    """Run `argv` in `workdir` (default: the runner's own), record its pid and exit; see the
    module docstring. Returns 0 (the command's own exit code goes to exit.json)."""
    log_path = launch_dir / "output.log"
    reason = ""
    with open(log_path, "ab", buffering=0) as out:
        try:
            # The command gets a process group of its own: cancel and the time limit end the
            # whole group (the job's own children too) while the runner lives to record it.
            proc = subprocess.Popen(
                argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0
            )
        except OSError as exc:
            out.write(f"plinth: could not start {argv[0]!r}: {exc}\n".encode())
            _write_atomic(
                launch_dir / "exit.json",
                json.dumps({"exit_code": 127, "reason": f"could not start: {exc}", "finished_at": time.time()}),
            )
            return 127
        _write_atomic(launch_dir / "pid", f"{os.getpid()} {proc.pid} {proc.pid}\n")
        try:
            code = proc.wait(timeout=max_seconds if max_seconds > 0 else None)
        except subprocess.TimeoutExpired:
            code = end_group(proc)
            reason = f"exceeded the maximum run time of {int(max_seconds)} s"
    _write_atomic(
        launch_dir / "exit.json", json.dumps({"exit_code": code, "reason": reason, "finished_at": time.time()})
    )
    return 0


def main() -> None:
    launch_dir, max_seconds, workdir, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv, "usage: local_runner <dir> <max seconds> <work dir> -- <argv...>"
    if os.fork() > 0:  # the first child returns at once; the grandchild is adopted by init
        os._exit(0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.exit(run(Path(launch_dir), float(max_seconds), argv, Path(workdir)))


if __name__ == "__main__":
    main()
