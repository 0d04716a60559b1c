"""Local builds of standard environments: one virtual environment per distinct requirements
list, made with uv under `<data dir>/environments/`.

A build is a row (`EnvironmentBuild`) and an idempotent task (`tasks.build_environment`):

- `ensure_build(normalised, sha)` gets or creates the row of a list (race-safe);
- `build_now(pk)` claims it with a conditional UPDATE (queued → building, or a building row
  whose lease expired because its worker died), builds into a temporary folder
  `.tmp-<hash>-<token>`, and renames that folder to `<hash[:16]>` only once everything
  succeeded, so a failed or interrupted build is never half-used. Progress (`step`,
  `progress`) and the installer's output (`log`, its tail) are written as it goes, about once
  a second, which also renews the lease;
- when the build ends, every environment that waits on it (state building) becomes ready or
  failed in the same transaction, each with an audit event (actor: the system);
- `rebuild(build)` queues a failed build again (services call it, and audit it).

The requirements hash includes whether the build extends the portal's packages: a list
that extends them is keyed by its plain sha256 (`packages.normalise`'s), a bare one by the
sha256 of ``"bare\\n" + list``, so the same list with and without the portal's packages is
two builds (`build_key`, `extends_portal`). The row carries no flag of its own: it is
derived from the hash (`extends_portal(build)`).

`lease_expires_at` doubles as the reconciler's clock: for a building row it is when its
worker is presumed dead; for a queued row, when the task is sent again if no worker has
claimed it by then (a lost message)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # claims of one build (workers that died mid-build) before it is failed
LEASE = timedelta(seconds=60)  # renewed about every second while a build runs
REQUEUE_AFTER = timedelta(seconds=60)  # a queued build no worker claimed gets its task again
LOG_LIMIT = 200_000  # characters of the installer's output kept (the tail)
LOG_CUT = "[… earlier output cut …]\n"
FLUSH_SECONDS = 1.0
FLUSH_LINES = 50
UV_ERROR_MARK = "\u00d7"  # uv starts its error report with a multiplication sign
PORTAL_PTH = "_plinth_portal.pth"
REQUIREMENTS_FILE = "plinth-requirements.txt"
# Reads what the built interpreter can import, .pth paths included (the portal's packages
# of an extending build); the first distribution of a name on sys.path wins, as for import.
# Names are PEP 503-normalised here: `scikit_learn` in the build and `scikit-learn` in the
# portal are one package, and the stored JSON keeps no order to decide later which came first.
PACKAGES_SNIPPET = (
    "import json, re\nfrom importlib import metadata\nfound = {}\n"
    "for d in metadata.distributions():\n"
    "    name = re.sub(r'[-_.]+', '-', d.metadata['Name'] or '').lower()\n"
    "    if name and name not in found:\n"
    "        found[name] = d.version\n"
    "print(json.dumps(found))\n"
)


class BuildFailed(Exception):
    """A build step failed; the message is the build's one-line `error`."""


class LeaseLost(Exception):
    """Another worker took the build over (this one's lease expired): stop, touch nothing."""


# --- keys and places ------------------------------------------------------------------
def build_key(normalised: str, sha: str, *, extends_portal: bool = True) -> str:
    """The `requirements_hash` of a build: `sha` (the sha256 hex of `normalised`, as
    `packages.normalise` returns it) for a build that extends the portal's packages, the
    sha256 of ``"bare\\n" + normalised`` for a bare one.
    Raises ValueError when `sha` is not the sha256 of `normalised`."""
    if hashlib.sha256(normalised.encode()).hexdigest() != sha:
        raise ValueError("sha is not the sha256 of the normalised requirements list")
    if extends_portal:
        return sha
    return hashlib.sha256(("bare\n" + normalised).encode()).hexdigest()


def extends_portal(build: EnvironmentBuild) -> bool:
    """Whether `build` links the portal's packages (see `build_key`)."""
    return build.requirements_hash == hashlib.sha256(build.requirements.encode()).hexdigest()


def environments_dir() -> Path:
    """The folder of all builds: PLINTH_ENVIRONMENTS_DIR, else `<DATA_DIR>/environments`."""
    configured = settings.PLINTH_ENVIRONMENTS_DIR
    return (Path(configured) if configured else Path(settings.DATA_DIR) / "environments").resolve()


def final_path(build: EnvironmentBuild) -> Path:
    """Where a ready build's virtual environment lives: `<environments dir>/<hash[:16]>`."""
    return environments_dir() / build.requirements_hash[:16]


def uv_binary() -> str:
    """The `uv` executable of the `uv` package installed with the portal."""
    import uv

    return str(uv.find_uv_bin())


# --- the row --------------------------------------------------------------------------
def ensure_build(normalised: str, sha: str, *, extends_portal: bool = True) -> EnvironmentBuild:
    """The build of a normalised requirements list (`packages.normalise`'s result), created
    queued when there is none; safe when two requests create it at once (the unique hash
    decides, the loser reads the winner's row). An existing build is returned as it is,
    a failed one included (`rebuild` retries it). Does not send the task: call `enqueue` after.
    Raises ValueError when `sha` does not match `normalised`."""
    key = build_key(normalised, sha, extends_portal=extends_portal)
    existing = EnvironmentBuild.objects.filter(requirements_hash=key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return EnvironmentBuild.objects.create(
                requirements_hash=key,
                requirements=normalised,
                status=BuildStatus.QUEUED,
                step="Queued",
                lease_expires_at=timezone.now() + REQUEUE_AFTER,
            )
    except IntegrityError:
        return EnvironmentBuild.objects.get(requirements_hash=key)


def enqueue(build: EnvironmentBuild) -> None:
    """Send the build's task once the current transaction commits, when it is queued (a
    broker outage is logged; the reconciler sends it again)."""
    if build.status != BuildStatus.QUEUED:
        return
    from apps.core.queue import enqueue_on_commit
    from apps.environments.tasks import build_environment

    enqueue_on_commit(build_environment, build.pk)


def rebuild(build: EnvironmentBuild) -> EnvironmentBuild:
    """Queue a failed build again: status queued, log, error and progress cleared; every
    environment of it that failed with it goes back to building; the task is sent on commit.
    The caller (a service) writes the audit event. Raises Conflict unless the build failed."""
    with transaction.atomic():
        now = timezone.now()
        changed = EnvironmentBuild.objects.filter(pk=build.pk, status=BuildStatus.FAILED).update(
            status=BuildStatus.QUEUED,
            progress=0,
            step="Queued",
            log="",
            error="",
            path="",
            python="",
            packages={},
            lease_token="",
            lease_expires_at=now + REQUEUE_AFTER,
            started_at=None,
            finished_at=None,
        )
        if not changed:
            raise Conflict("Only a failed build can be built again.")
        Environment.objects.filter(build_id=build.pk, state=EnvironmentState.FAILED).update(
            state=EnvironmentState.BUILDING, state_reason="", updated_at=now
        )
        build.refresh_from_db()
        enqueue(build)
    return build


def build_now(build_pk: int) -> EnvironmentBuild:
    """Build `build_pk` in this process (the task calls it) and return the row as it ends.

    Claims the row first (queued, or building with an expired lease → building under a new
    lease token); when nothing was claimed (another worker holds it, or it is ready or
    failed already) returns the row untouched. Steps and progress: creating the venv (10 %),
    linking the portal's packages (20 %), installing (30 to 85 %, with the log written as it
    comes), recording the packages (90 %), done (100 %). Any failure — the installer's
    non-zero exit, the timeout (PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS), an exception —
    ends it failed with a one-line `error`, the log kept and the temporary folder removed.
    Raises EnvironmentBuild.DoesNotExist for an unknown pk."""
    token = uuid.uuid4().hex
    now = timezone.now()
    claimable = Q(status=BuildStatus.QUEUED) | Q(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now), status=BuildStatus.BUILDING
    )
    claimed = EnvironmentBuild.objects.filter(claimable, pk=build_pk).update(
        status=BuildStatus.BUILDING,
        lease_token=token,
        lease_expires_at=now + LEASE,
        attempts=F("attempts") + 1,
        started_at=now,
        finished_at=None,
        progress=0,
        step="Starting",
        log="",
        error="",
    )
    build = EnvironmentBuild.objects.get(pk=build_pk)
    if not claimed:
        return build
    _Run(build, token).run()
    build.refresh_from_db()
    return build


# --- one claimed build ------------------------------------------------------------------
class _Run:
    """The work of one claimed build; every write is conditional on holding the lease."""

    def __init__(self, build: EnvironmentBuild, token: str) -> None:
        self.build = build
        self.token = token
        self.root = environments_dir()
        self.tmp = self.root / f".tmp-{build.requirements_hash}-{token}"
        self.lines: list[str] = []
        self.size = 0
        self.cut = False
        self.home: Path | None = None  # the attempt's own HOME, once made
        self.deadline = time.monotonic() + float(settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS)
        if build.attempts > 1:
            self._log(f"Attempt {build.attempts}: the previous attempt stopped without finishing.\n")

    def run(self) -> None:
        if self.build.attempts > MAX_ATTEMPTS:
            self._fail(
                f"{self.build.attempts - 1} attempts ended without finishing (their worker died or was killed, "
                "e.g. out of memory); rebuild to try again"
            )
            return
        try:
            self._attempt()
        finally:
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)

    def _attempt(self) -> None:
        try:
            self._steps()
        except LeaseLost:
            logger.warning("build %s: another worker took it over; this attempt stops", self.build.pk)
            self._remove_tmp()
        except DatabaseError:
            # The database, not the build, failed (e.g. locked past the busy timeout): this
            # attempt stops, and the lease running out lets the reconciler try again.
            logger.warning("build %s: the database failed; the build is tried again later", self.build.pk)
            self._remove_tmp()
            raise
        except BuildFailed as exc:
            self._remove_tmp()
            self._fail(str(exc))
        except Exception as exc:
            logger.exception("build %s failed", self.build.pk)
            self._remove_tmp()
            self._fail(f"{type(exc).__name__}: {exc}".splitlines()[0][:500])

    def _steps(self) -> None:
        build = self.build
        self.root.mkdir(parents=True, exist_ok=True)
        self._save(progress=10, step="Creating the virtual environment")
        self._command("uv venv", [uv_binary(), "venv", "--relocatable", "--python", sys.executable, str(self.tmp)])
        python = self.tmp / "bin" / "python"
        site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(self.tmp), "platbase": str(self.tmp)}))
        if not python.exists() or not site_packages.is_dir():
            raise BuildFailed(f"uv venv made no interpreter at {python}")
        if extends_portal(build):
            self._save(progress=20, step="Linking the portal's packages")
            (site_packages / PORTAL_PTH).write_text(_portal_pth())
            self._log(f"Linked the portal's packages ({', '.join(_portal_site_dirs())}).\n")
        lines = build.requirements.splitlines()
        if lines:
            requirements = self.tmp / REQUIREMENTS_FILE
            requirements.write_text(build.requirements + "\n")
            self._save(progress=30, step=f"Installing {len(lines)} package{'s' if len(lines) != 1 else ''}")
            self._command(
                "uv pip install",
                [uv_binary(), "pip", "install", "--python", str(python), "-r", str(requirements)],
                progress_by_prefix={"Resolved": 50, "Prepared": 70, "Installed": 85},
            )
        self._save(progress=90, step="Recording the installed packages")
        packages = self._packages(python)
        self._finish(packages)

    # --- steps ---------------------------------------------------------------------------
    def _command(self, what: str, argv: list[str], progress_by_prefix: dict[str, int] | None = None) -> None:
        """Run `argv`, its output appended to the log as it comes (written about once a
        second); BuildFailed on a non-zero exit or when the build's time is up."""
        self._log(f"$ {' '.join(argv)}\n")
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=build_process_env(home=self._home()),
            cwd=self.root,  # no project configuration of the portal's checkout applies
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        output: list[str] = []
        pending = 0
        last_flush = time.monotonic()
        progress: int | None = None
        try:
            while True:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    output.append(line)
                    self._log(line)
                    pending += 1
                    for prefix, value in (progress_by_prefix or {}).items():
                        if line.lstrip().startswith(prefix):
                            progress = value
                if time.monotonic() > self.deadline:
                    raise BuildFailed(
                        f"{what} did not finish within {settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS} s"
                    )
                if pending >= FLUSH_LINES or time.monotonic() - last_flush >= FLUSH_SECONDS:
                    self._save(**({"progress": progress} if progress is not None else {}))
                    pending, last_flush = 0, time.monotonic()
        except BaseException:
            _kill(proc)
            raise
        finally:
            reader.join(timeout=5)
        code = proc.wait()
        if code != 0:
            raise BuildFailed(f"{what} exited {code}: {_reason(output)}")
        self._save(**({"progress": progress} if progress is not None else {}))

    def _packages(self, python: Path) -> dict[str, str]:
        remaining = max(1.0, self.deadline - time.monotonic())
        try:
            done = subprocess.run(
                [str(python), "-c", PACKAGES_SNIPPET],
                capture_output=True,
                text=True,
                timeout=remaining,
                stdin=subprocess.DEVNULL,
                env=build_process_env(home=self._home()),
            )
        except subprocess.TimeoutExpired:
            raise BuildFailed("listing the installed packages timed out") from None
        if done.returncode != 0:
            self._log(done.stderr)
            raise BuildFailed(f"listing the installed packages exited {done.returncode}: {_reason([done.stderr])}")
        found = json.loads(done.stdout)
        self._log(f"{len(found)} packages importable.\n")
        return {str(name): str(version) for name, version in found.items()}

    def _finish(self, packages: dict[str, str]) -> None:
        # Still ours (LeaseLost otherwise: another worker took over, maybe finished): a stale
        # attempt never moves a folder that launches may already use.
        self._save(progress=95, step="Putting it in place")
        target = final_path(self.build)
        if target.exists():
            # Left by an attempt that renamed its folder but never recorded it (a worker that
            # died between the two): never used, as the build was not ready. Moved aside first
            # so the rename below stays one atomic step.
            aside = self.root / f".old-{self.build.requirements_hash}-{self.token}"
            target.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        self.tmp.rename(target)
        now = timezone.now()
        with transaction.atomic():
            done = EnvironmentBuild.objects.filter(pk=self.build.pk, lease_token=self.token).update(
                status=BuildStatus.READY,
                progress=100,
                step="Done",
                log=self._text(),
                path=str(target),
                python=str(target / "bin" / "python"),
                packages=packages,
                error="",
                lease_token="",
                lease_expires_at=None,
                finished_at=now,
            )
            if not done:
                raise LeaseLost
            self.build.refresh_from_db()
            settle_environments(self.build)

    def _fail(self, reason: str) -> None:
        self._log(f"Failed: {reason}\n")
        with transaction.atomic():
            done = EnvironmentBuild.objects.filter(pk=self.build.pk, lease_token=self.token).update(
                status=BuildStatus.FAILED,
                step="Failed",
                log=self._text(),
                error=reason,
                path="",
                python="",
                lease_token="",
                lease_expires_at=None,
                finished_at=timezone.now(),
            )
            if not done:
                return
            self.build.refresh_from_db()
            settle_environments(self.build)

    # --- the row while it runs -----------------------------------------------------------
    def _home(self) -> Path:
        """The attempt's own HOME (see build_process_env): an empty temporary folder, made
        on first use and removed when the attempt ends (`run`)."""
        if self.home is None:
            self.home = Path(tempfile.mkdtemp(prefix="plinth-build-home-"))
        return self.home

    def _save(self, **fields: Any) -> None:
        """Write progress and the log so far, renewing the lease; LeaseLost when another
        worker took the build over."""
        done = EnvironmentBuild.objects.filter(
            pk=self.build.pk, lease_token=self.token, status=BuildStatus.BUILDING
        ).update(log=self._text(), lease_expires_at=timezone.now() + LEASE, **fields)
        if not done:
            raise LeaseLost

    def _log(self, text: str) -> None:
        if not text:
            return
        self.lines.append(text)
        self.size += len(text)
        while self.size > LOG_LIMIT and len(self.lines) > 1:
            self.size -= len(self.lines.pop(0))
            self.cut = True

    def _text(self) -> str:
        text = "".join(self.lines)
        if len(text) > LOG_LIMIT:
            text = text[-LOG_LIMIT:]
            self.cut = True
        return (LOG_CUT + text) if self.cut else text

    def _remove_tmp(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def settle_environments(build: EnvironmentBuild) -> list[Environment]:
    """Every environment waiting on `build` (state building) becomes ready, or failed with
    the build's error as `state_reason`, each with an audit event by the system; call it
    inside the transaction that ended the build. A build still queued or building changes
    nothing. Each row changes with a conditional UPDATE, so an environment a person changed
    meanwhile is left alone. Returns the environments changed."""
    if build.status == BuildStatus.READY:
        state, reason, verb = EnvironmentState.READY, "", AuditVerb.ENVIRONMENT_BUILT
    elif build.status == BuildStatus.FAILED:
        state, reason, verb = EnvironmentState.FAILED, build.error, AuditVerb.ENVIRONMENT_BUILD_FAILED
    else:
        return []
    changed = []
    now = timezone.now()
    for env in Environment.objects.select_related("team").filter(build=build, state=EnvironmentState.BUILDING):
        if not Environment.objects.filter(pk=env.pk, state=EnvironmentState.BUILDING).update(
            state=state, state_reason=reason, updated_at=now
        ):
            continue
        env.state, env.state_reason, env.updated_at = state, reason, now
        after: dict[str, Any] = {"state": state, "build": build.pk}
        if reason:
            after["error"] = reason
        record(None, verb, env, team=env.team, before={"state": EnvironmentState.BUILDING}, after=after)
        changed.append(env)
    return changed


# --- helpers ----------------------------------------------------------------------------
# What uv (and any package build script it runs: an sdist's setup.py is arbitrary code) may
# see of the worker's environment: where programs and the cache are, locale, the network's
# proxies and certificates, and uv's and pip's own settings (index URLs) — never the
# portal's secrets (database URL, secret key, MLflow credentials).
BUILD_ENV_NAMES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"})
BUILD_ENV_PREFIXES = ("LC_", "UV_", "PIP_", "SSL_CERT_")
PROXY_NAMES = frozenset({"http_proxy", "https_proxy", "no_proxy", "all_proxy"})


def build_process_env(host_env: dict[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment of a build's commands: an allow-list of `host_env` (default
    os.environ; see BUILD_ENV_NAMES), plus NO_COLOR and UV_NO_PROGRESS for a plain log.

    `home`: the HOME the commands get instead of the worker's, so that a package's build
    script cannot read the worker's own files there (~/.netrc, ~/.pgpass …); uv keeps the
    worker's cache (UV_CACHE_DIR set to where uv would have looked: XDG_CACHE_HOME/uv, else
    HOME/.cache/uv) so builds stay fast. Index settings then come from UV_* variables."""
    host = dict(os.environ) if host_env is None else host_env
    env = {
        name: value
        for name, value in host.items()
        if name in BUILD_ENV_NAMES or name.startswith(BUILD_ENV_PREFIXES) or name.lower() in PROXY_NAMES
    }
    if home is not None:
        if "UV_CACHE_DIR" not in env:
            if host.get("XDG_CACHE_HOME"):
                env["UV_CACHE_DIR"] = str(Path(host["XDG_CACHE_HOME"]) / "uv")
            elif host.get("HOME"):
                env["UV_CACHE_DIR"] = str(Path(host["HOME"]) / ".cache" / "uv")
        env["HOME"] = str(home)
    env.update(NO_COLOR="1", UV_NO_PROGRESS="1")
    return env


def _portal_site_dirs() -> list[str]:
    """The portal interpreter's site-packages folders (purelib, platlib; once each)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _portal_pth() -> str:
    # `site.addsitedir` rather than bare paths: the portal's own .pth files (its editable
    # install among them) are processed too, and the folders come after the venv's own.
    return "".join(f"import site; site.addsitedir({folder!r})\n" for folder in _portal_site_dirs())


def _reason(output: list[str]) -> str:
    """One line saying why a command failed: uv's error (the line marked with a cross, and its explanation),
    else the last non-empty line of its output."""
    lines = [line.strip() for text in output for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith((UV_ERROR_MARK, "error:")):
            parts = [line.lstrip(UV_ERROR_MARK).removeprefix("error:").strip()]
            parts += [part.lstrip("╰─▶│ ").strip() for part in lines[i + 1 : i + 8]]
            return " ".join(part for part in parts if part)[:500]
    return (lines[-1] if lines else "no output")[:500]


def _kill(proc: subprocess.Popen[str]) -> None:
    """Stop a command and everything it started (it leads its own session)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
