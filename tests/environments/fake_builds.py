"""Fake builds for the service, API and page tests: EnvironmentBuild rows whose status is
set directly with the ORM (ready or failed), keyed exactly as the builder keys the list, so
that `create_environment` finds them. Tests of real builds live in test_build.py."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from apps.environments.builder import build_key
from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from apps.environments.packages import normalise


def fake_build(requirements: str, status: str = BuildStatus.READY, **fields: Any) -> EnvironmentBuild:
    """The build `create_environment(requirements=...)` would use (extending the portal),
    saved with `status`: ready with a package list, or failed with an error and a log."""
    normalised, sha = normalise(requirements)
    finished = status in (BuildStatus.READY, BuildStatus.FAILED)
    defaults: dict[str, Any] = {
        "requirements": normalised,
        "status": status,
        "progress": 100 if status == BuildStatus.READY else 40,
        "step": "Done" if status == BuildStatus.READY else "Installing",
        "log": "Resolved 1 package\nInstalled 1 package\n",
        "finished_at": timezone.now() if finished else None,
        "started_at": timezone.now(),
    }
    if status == BuildStatus.READY:
        defaults.update(python="/nonexistent/bin/python", path="/nonexistent", packages={"cowsay": "6.1"})
    if status == BuildStatus.FAILED:
        defaults.update(error="No solution found: no-such-package was not found in the package registry.")
    defaults.update(fields)
    return EnvironmentBuild.objects.create(requirements_hash=build_key(normalised, sha), **defaults)


def env_row(
    name: str, *, team: Any = None, version: int = 1, state: str = EnvironmentState.READY, **fields: Any
) -> Environment:
    """An environment made with the ORM (no service, no audit), for fixtures."""
    return Environment.objects.create(team=team, name=name, version=version, state=state, **fields)
