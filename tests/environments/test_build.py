"""Local environment builds, for real: uv makes the venv and installs from PyPI (the tests
marked `network`; uv's cache makes a repeated build take well under a second)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput
from apps.environments import builder, selection, tasks
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from apps.environments.packages import normalise
from portal.celery import app

UNKNOWN = "plinth-no-such-package-zz9"


@pytest.fixture
def env_dir(settings: Any, tmp_path: Path) -> Path:
    """A private environments folder for this test's builds."""
    folder = tmp_path / "environments"
    settings.PLINTH_ENVIRONMENTS_DIR = str(folder)
    return folder


@pytest.fixture
def eager() -> Iterator[None]:
    """`.delay()` runs the task at once, in this thread."""
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = before


def waiting_environment(requirements: str, name: str, *, extends_portal: bool = True) -> Environment:
    """A platform-wide environment in state building, on the (shared) build of its list."""
    normalised, sha = normalise(requirements)
    build = builder.ensure_build(normalised, sha, extends_portal=extends_portal)
    return Environment.objects.create(
        name=name,
        requirements=requirements,
        extends_portal=extends_portal,
        build=build,
        state=EnvironmentState.BUILDING,
    )


def build_pk(env: Environment) -> int:
    assert env.build_id is not None
    return env.build_id


def imports(python: str, module: str) -> bool:
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, stdin=subprocess.DEVNULL)
    return done.returncode == 0


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


@pytest.mark.network
def test_a_build_extends_the_portal_with_cowsay_and_the_portal_stays_without(db: None, env_dir: Path) -> None:
    env = waiting_environment("cowsay==6.1", "with-cowsay")
    assert env.build is not None

    build = builder.build_now(env.build.pk)

    assert build.status == BuildStatus.READY, build.log
    assert (build.progress, build.step, build.error) == (100, "Done", "")
    assert build.path == str(env_dir / build.requirements_hash[:16])
    assert build.python == str(Path(build.path) / "bin" / "python")
    assert build.packages["cowsay"] == "6.1"
    assert "mlflow" in build.packages  # the portal's packages, seen through the .pth link
    assert "cowsay==6.1" in build.log
    assert leftovers(env_dir) == []
    assert imports(build.python, "cowsay") and imports(build.python, "mlflow")
    assert not imports(sys.executable, "cowsay")
    env.refresh_from_db()
    assert env.state == EnvironmentState.READY
    event = AuditEvent.objects.get(verb=AuditVerb.ENVIRONMENT_BUILT, target_id=str(env.pk))
    assert event.actor is None and event.after == {"state": "ready", "build": build.pk}


@pytest.mark.network
def test_a_bare_build_is_its_own_build_without_the_portal_packages(db: None, env_dir: Path) -> None:
    extending = waiting_environment("cowsay==6.1", "with-cowsay")
    bare = waiting_environment("cowsay==6.1", "bare-cowsay", extends_portal=False)
    assert bare.build_id != extending.build_id

    build = builder.build_now(build_pk(bare))

    assert build.status == BuildStatus.READY, build.log
    assert not builder.extends_portal(build)
    assert imports(build.python, "cowsay") and not imports(build.python, "mlflow")
    assert "mlflow" not in build.packages


@pytest.mark.network
def test_identical_lists_share_one_build_and_it_runs_once(db: None, env_dir: Path, eager: None) -> None:
    first = waiting_environment("cowsay==6.1\n# a comment\n", "cowsay-a")
    second = waiting_environment("  CowSay == 6.1   # pinned\n\n", "cowsay-b")
    assert first.build_id == second.build_id
    assert EnvironmentBuild.objects.count() == 1

    assert tasks.build_environment.delay(build_pk(first)).get() == "ready"
    assert tasks.build_environment.delay(build_pk(second)).get() == "ready"

    build = EnvironmentBuild.objects.get()
    assert build.attempts == 1
    assert set(Environment.objects.filter(build=build).values_list("state", flat=True)) == {"ready"}
    assert AuditEvent.objects.filter(verb=AuditVerb.ENVIRONMENT_BUILT).count() == 2


@pytest.mark.network
def test_an_unknown_package_fails_the_build_with_its_log_and_is_never_selectable(db: None, env_dir: Path) -> None:
    env = waiting_environment(f"{UNKNOWN}==1.0", "broken")

    build = builder.build_now(build_pk(env))

    assert build.status == BuildStatus.FAILED
    assert build.error.startswith("uv pip install exited 1: ")
    assert UNKNOWN in build.error and "\n" not in build.error
    assert UNKNOWN in build.log
    assert (build.path, build.python) == ("", "")
    assert not (env_dir / build.requirements_hash[:16]).exists()
    assert leftovers(env_dir) == []
    env.refresh_from_db()
    assert env.state == EnvironmentState.FAILED and env.state_reason == build.error
    assert AuditEvent.objects.filter(verb=AuditVerb.ENVIRONMENT_BUILD_FAILED, target_id=str(env.pk)).count() == 1
    with pytest.raises(InvalidInput) as refused:
        selection.apply_rules(env)
    assert refused.value.status_code == 400


def test_a_build_that_runs_out_of_time_fails_and_leaves_no_folder(db: None, env_dir: Path, settings: Any) -> None:
    settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS = 0
    env = waiting_environment("cowsay==6.1", "slow")

    build = builder.build_now(build_pk(env))

    assert build.status == BuildStatus.FAILED
    assert build.error == "uv venv did not finish within 0 s"
    assert "uv venv" in build.log
    assert leftovers(env_dir) == [] and not (env_dir / build.requirements_hash[:16]).exists()
    env.refresh_from_db()
    assert env.state == EnvironmentState.FAILED


def test_a_long_log_keeps_its_tail(db: None, env_dir: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS = 0
    monkeypatch.setattr(builder, "LOG_LIMIT", 120)
    env = waiting_environment("cowsay==6.1", "chatty")

    build = builder.build_now(build_pk(env))

    assert build.log.startswith(builder.LOG_CUT)
    assert len(build.log) <= len(builder.LOG_CUT) + 120
    assert build.log.endswith(f"Failed: {build.error}\n")


def test_claiming_a_build_is_idempotent(db: None, env_dir: Path, settings: Any) -> None:
    settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS = 0  # fails fast, offline
    env = waiting_environment("cowsay==6.1", "twice")
    first = builder.build_now(build_pk(env))

    second = builder.build_now(build_pk(env))

    assert (second.status, second.attempts, second.log, second.finished_at) == (
        first.status,
        1,
        first.log,
        first.finished_at,
    )
    assert AuditEvent.objects.filter(verb=AuditVerb.ENVIRONMENT_BUILD_FAILED).count() == 1


def test_a_build_another_worker_holds_is_left_alone(db: None, env_dir: Path) -> None:
    env = waiting_environment("cowsay==6.1", "held")
    expires = timezone.now() + timedelta(seconds=30)
    EnvironmentBuild.objects.filter(pk=build_pk(env)).update(
        status=BuildStatus.BUILDING, lease_token="theirs", lease_expires_at=expires, attempts=1
    )

    build = builder.build_now(build_pk(env))

    assert (build.status, build.lease_token, build.attempts) == (BuildStatus.BUILDING, "theirs", 1)
    assert not env_dir.exists()


def test_a_build_whose_workers_kept_dying_fails_instead_of_being_tried_for_ever(db: None, env_dir: Path) -> None:
    env = waiting_environment("cowsay==6.1", "killer")
    EnvironmentBuild.objects.filter(pk=build_pk(env)).update(
        status=BuildStatus.BUILDING,
        lease_token="dead",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        attempts=builder.MAX_ATTEMPTS,
    )

    build = builder.build_now(build_pk(env))

    assert build.status == BuildStatus.FAILED and "attempts ended without finishing" in build.error
    env.refresh_from_db()
    assert env.state == EnvironmentState.FAILED
    assert not (env_dir / build.requirements_hash[:16]).exists()


@pytest.mark.network
def test_a_stale_attempt_never_replaces_the_folder_of_a_build_another_worker_finished(
    db: None, env_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = waiting_environment("cowsay==6.1", "stale")
    pk = build_pk(env)

    def taken_over(run: Any, python: Any) -> dict[str, str]:
        # Meanwhile the reconciler gave the build to another worker, which finished it.
        EnvironmentBuild.objects.filter(pk=pk).update(status=BuildStatus.READY, lease_token="")
        return {"cowsay": "6.1"}

    monkeypatch.setattr(builder._Run, "_packages", taken_over)
    target = builder.final_path(EnvironmentBuild.objects.get(pk=pk))
    target.mkdir(parents=True)
    (target / "in-use").write_text("launches run here")

    builder.build_now(pk)

    assert (target / "in-use").exists()  # untouched
    assert EnvironmentBuild.objects.get(pk=pk).status == BuildStatus.READY


@pytest.mark.network
def test_the_reconciler_reclaims_a_build_whose_worker_died(db: None, env_dir: Path, eager: None) -> None:
    env = waiting_environment("cowsay==6.1", "orphan")
    build = env.build
    assert build is not None
    dead = env_dir / f".tmp-{build.requirements_hash}-dead"
    (dead / "bin").mkdir(parents=True)  # what the dead worker had made so far
    EnvironmentBuild.objects.filter(pk=build.pk).update(
        status=BuildStatus.BUILDING,
        lease_token="dead",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        attempts=1,
        log="half a log",
    )

    counts = tasks.reconcile_builds_pass()

    build.refresh_from_db()
    assert build.status == BuildStatus.READY, build.log
    assert build.attempts == 2
    assert build.log.startswith("Attempt 2: the previous attempt stopped without finishing.")
    assert (counts["reclaimed"], counts["requeued"]) == (1, 1)
    env.refresh_from_db()
    assert env.state == EnvironmentState.READY
    # The dead worker's folder is only removed once no build could still be writing it.
    assert dead.exists()


def test_the_reconciler_resends_only_queued_builds_that_waited_too_long(
    db: None, env_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(tasks.build_environment, "delay", lambda pk: sent.append(pk))
    fresh = waiting_environment("cowsay==6.1", "fresh")
    lost = waiting_environment("cowsay==6.0", "lost")
    EnvironmentBuild.objects.filter(pk=build_pk(lost)).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    first = tasks.reconcile_builds_pass()
    again = tasks.reconcile_builds_pass()

    assert sent == [lost.build_id]  # once: the pass moved its next look a minute on
    assert (first["requeued"], again["requeued"]) == (1, 0)
    assert EnvironmentBuild.objects.get(pk=build_pk(fresh)).status == BuildStatus.QUEUED


def test_the_reconciler_removes_folders_dead_workers_left(db: None, env_dir: Path, settings: Any) -> None:
    settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS = 0  # any folder is older than a build may run
    env = waiting_environment("cowsay==6.1", "running")
    EnvironmentBuild.objects.filter(pk=build_pk(env)).update(
        status=BuildStatus.BUILDING, lease_token="alive", lease_expires_at=timezone.now() + timedelta(seconds=30)
    )
    alive = env_dir / f".tmp-{'a' * 64}-alive"
    dead = env_dir / f".tmp-{'b' * 64}-dead"
    ready = env_dir / ("c" * 16)
    for folder in (alive, dead, ready):
        folder.mkdir(parents=True)
    old = timezone.now().timestamp() - 3600
    for folder in (alive, dead, ready):
        os.utime(folder, (old, old))

    assert tasks.remove_orphan_folders() == 1

    assert alive.exists() and ready.exists() and not dead.exists()


def test_the_reconciler_settles_environments_that_missed_their_build_ending(db: None, env_dir: Path) -> None:
    env = waiting_environment("cowsay==6.1", "late")
    EnvironmentBuild.objects.filter(pk=build_pk(env)).update(status=BuildStatus.FAILED, error="uv pip install exited 1")

    assert tasks.reconcile_builds_pass()["settled"] == 1

    env.refresh_from_db()
    assert (env.state, env.state_reason) == (EnvironmentState.FAILED, "uv pip install exited 1")


def test_rebuild_queues_a_failed_build_again_and_its_environments_wait_for_it(
    db: None, env_dir: Path, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(tasks.build_environment, "delay", lambda pk: sent.append(pk))
    env = waiting_environment("cowsay==6.1", "retry")
    EnvironmentBuild.objects.filter(pk=build_pk(env)).update(
        status=BuildStatus.FAILED, error="boom", log="the old log", progress=30
    )
    Environment.objects.filter(pk=env.pk).update(state=EnvironmentState.FAILED, state_reason="boom")
    build = EnvironmentBuild.objects.get(pk=build_pk(env))

    with django_capture_on_commit_callbacks(execute=True):
        builder.rebuild(build)

    assert (build.status, build.log, build.error, build.progress) == (BuildStatus.QUEUED, "", "", 0)
    assert sent == [build.pk]
    env.refresh_from_db()
    assert (env.state, env.state_reason) == (EnvironmentState.BUILDING, "")
    with pytest.raises(Conflict):
        builder.rebuild(build)  # queued now: nothing to retry


def test_ensure_build_returns_a_failed_build_as_it_is(db: None) -> None:
    normalised, sha = normalise("cowsay==6.1")
    build = builder.ensure_build(normalised, sha)
    EnvironmentBuild.objects.filter(pk=build.pk).update(status=BuildStatus.FAILED)

    again = builder.ensure_build(normalised, sha)

    assert (again.pk, again.status) == (build.pk, BuildStatus.FAILED)
    with pytest.raises(ValueError):
        builder.ensure_build(normalised, "0" * 64)


def test_build_commands_never_see_the_portals_secrets() -> None:
    host = {
        "PATH": "/usr/bin",
        "HOME": "/home/plinth",
        "UV_INDEX_URL": "https://pypi.example.test/simple",
        "HTTPS_PROXY": "http://proxy:3128",
        "LC_ALL": "C.UTF-8",
        "DATABASE_URL": "postgres://plinth:secret@db/plinth",
        "PLINTH_SECRET_KEY": "s3cret",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "VIRTUAL_ENV": "/work/main/.venv",
        "PYTHONPATH": "/elsewhere",
    }

    env = builder.build_process_env(host)

    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/plinth",
        "UV_INDEX_URL": "https://pypi.example.test/simple",
        "HTTPS_PROXY": "http://proxy:3128",
        "LC_ALL": "C.UTF-8",
        "NO_COLOR": "1",
        "UV_NO_PROGRESS": "1",
    }


def test_a_builds_commands_get_a_home_of_their_own_and_keep_uvs_cache() -> None:
    host = {"PATH": "/usr/bin", "HOME": "/home/plinth", "DATABASE_URL": "postgres://secret"}

    env = builder.build_process_env(host, home=Path("/data/environments/.home"))

    assert env["HOME"] == "/data/environments/.home"  # not the worker's (~/.netrc, ~/.pgpass)
    assert env["UV_CACHE_DIR"] == "/home/plinth/.cache/uv"
    assert "DATABASE_URL" not in env
    given = builder.build_process_env({**host, "UV_CACHE_DIR": "/cache"}, home=Path("/h"))
    assert given["UV_CACHE_DIR"] == "/cache"
