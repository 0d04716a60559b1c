"""Fixtures of standard environments, for every test that needs a real local build.

`built_cowsay_env` is the platform-wide environment `with-cowsay:1` (requirements
`cowsay==6.1`, extending the portal's packages, state ready) whose build is a real virtual
environment made once per test session by `apps.environments.builder` (uv; PyPI must be
reachable, as it is here and in CI). The venv lives on disk for the whole session; the
database rows are made per test, pointing at it, so a test's rollback never loses it.

Tests elsewhere use it with
    from tests.environments.conftest import built_cowsay_env, cowsay_venv  # noqa: F401
(each module that imports it builds the venv once; uv's cache makes that well under a second).

Tests that install from the registry carry the `network` marker (pyproject.toml); they run
by default — CI must run them — and `-m "not network"` leaves them out offline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from apps.environments import builder
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from apps.environments.packages import normalise

COWSAY = "cowsay==6.1"


@dataclass(frozen=True)
class BuiltVenv:
    """A real build made once per session: what its EnvironmentBuild row records."""

    requirements: str  # the normalised list
    requirements_hash: str
    path: str
    python: str
    packages: dict[str, str] = field(default_factory=dict)
    log: str = ""


def build_once(requirements: str, folder: str, *, extends_portal: bool = True) -> BuiltVenv:
    """Build `requirements` for real into `folder` (its environments dir) and return what
    the build recorded; the database rows are rolled back, the venv stays on disk.
    Fails the calling test (pytest.fail) when the build does not end ready."""
    normalised, sha = normalise(requirements)
    with override_settings(PLINTH_ENVIRONMENTS_DIR=folder), transaction.atomic():
        build = builder.ensure_build(normalised, sha, extends_portal=extends_portal)
        build = builder.build_now(build.pk)
        transaction.set_rollback(True)
    if build.status != BuildStatus.READY:
        pytest.fail(f"the session build of {requirements!r} failed: {build.error}\n{build.log[-3000:]}")
    return BuiltVenv(build.requirements, build.requirements_hash, build.path, build.python, build.packages, build.log)


@pytest.fixture(scope="session")
def cowsay_venv(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltVenv]:
    """The real venv of `cowsay==6.1` over the portal's packages, built once per session."""
    folder = tmp_path_factory.mktemp("environments")
    with django_db_blocker.unblock():
        yield build_once(COWSAY, str(folder))


def ready_environment(venv: BuiltVenv, *, name: str, requirements: str, team: Any = None) -> Environment:
    """DB rows for a session-built venv: its EnvironmentBuild (ready) and a ready
    Environment `name:1` using it (platform-wide unless `team`)."""
    build, _ = EnvironmentBuild.objects.update_or_create(
        requirements_hash=venv.requirements_hash,
        defaults={
            "requirements": venv.requirements,
            "status": BuildStatus.READY,
            "progress": 100,
            "step": "Done",
            "path": venv.path,
            "python": venv.python,
            "packages": dict(venv.packages),
            "log": venv.log,
            "attempts": 1,
        },
    )
    return Environment.objects.create(
        team=team,
        name=name,
        version=1,
        description=f"The portal's packages and {requirements}.",
        requirements=requirements,
        extends_portal=True,
        build=build,
        state=EnvironmentState.READY,
    )


@pytest.fixture
def built_cowsay_env(db: None, cowsay_venv: BuiltVenv) -> Environment:
    """The platform-wide, ready environment `with-cowsay:1`: the portal's packages plus
    cowsay 6.1, in a real venv (its build's `python` imports cowsay and mlflow)."""
    return ready_environment(cowsay_venv, name="with-cowsay", requirements=COWSAY)
