"""The environments' routes in the authorization matrix (tests/access/test_matrix.py).

The world gets the platform-wide, ready `base:1` (platform admins manage it; every signed-in
user, omar included, sees it: his refusals are 403, not 404), team demo's ready
`demo-env:1` with a ready local build (its leads manage it; viewers and members read it)
and demo's `broken:1`, failed with its failed build (what a rebuild acts on). Builds are
rows made with the ORM: no build runs here."""

from __future__ import annotations

import pytest
from django.utils import timezone

from apps.environments.models import BuildStatus, Environment, EnvironmentBuild, EnvironmentState
from tests.access.matrix_vocab import NONE, Kwargs, Op, Route, World, route

PLATFORM_ENV: Kwargs = lambda w: {"pk": w.extra["platform_env"].pk}  # noqa: E731 - a table of small functions
TEAM_ENV: Kwargs = lambda w: {"pk": w.extra["team_env"].pk}  # noqa: E731
FAILED_ENV: Kwargs = lambda w: {"pk": w.extra["failed_env"].pk}  # noqa: E731
CONTENT = {
    "description": "",
    "requirements": "",
    "extends_portal": "on",
    "image": "",
    "node_selector": "",
    "tolerations": "",
    "env": "",
}
PAGE_NEW = {**CONTENT, "team": "demo", "name": "fresh"}

MATRIX: dict[str, Route] = {
    # --- pages ---------------------------------------------------------------------------
    # Scoped: omar sees the platform-wide ones and none of demo's.
    "environments:list": route(NONE, Op("GET", "vic", outsider=200)),
    # Leads define their teams' environments, platform admins any; omar leads no team: 403.
    "environments:create": route(
        NONE,
        Op("GET", "lin", too_weak="ada", outsider=403),
        Op("POST", "lin", ok=302, too_weak="ada", outsider=403, body=PAGE_NEW),
    ),
    "environments:detail": route(
        TEAM_ENV,
        Op("GET", "vic", note="team's"),
        Op("GET", "vic", outsider=200, kwargs=PLATFORM_ENV, note="platform-wide"),
    ),
    "environments:new-version": route(
        TEAM_ENV,
        Op("GET", "lin", too_weak="ada"),
        Op("POST", "lin", ok=302, too_weak="ada", body=CONTENT),
    ),
    "environments:change": route(
        TEAM_ENV,
        Op("POST", "lin", ok=302, too_weak="ada", body={"action": "describe", "description": "x"}, note="team's"),
        Op(
            "POST",
            "root",
            ok=302,
            too_weak="lin",
            outsider=403,
            kwargs=PLATFORM_ENV,
            body={"action": "describe", "description": "x"},
            note="platform-wide",
        ),
    ),
    "environments:set-default": route(PLATFORM_ENV, Op("POST", "root", ok=302, too_weak="lin", outsider=403)),
    "environments:rebuild": route(FAILED_ENV, Op("POST", "lin", ok=302, too_weak="ada")),
    # --- API -----------------------------------------------------------------------------
    "api:environment-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "lin", ok=201, too_weak="ada", body={"team": "demo", "name": "fresh"}, note="team's"),
        Op("POST", "root", ok=201, too_weak="lin", outsider=403, body={"name": "fresh"}, note="platform-wide"),
    ),
    "api:environment-detail": route(
        TEAM_ENV,
        Op("GET", "vic", note="team's"),
        Op("GET", "vic", outsider=200, kwargs=PLATFORM_ENV, note="platform-wide"),
        Op("PATCH", "lin", too_weak="ada", body={"description": "x"}, note="team's"),
        Op(
            "PATCH",
            "root",
            too_weak="lin",
            outsider=403,
            kwargs=PLATFORM_ENV,
            body={"description": "x"},
            note="platform-wide",
        ),
    ),
    "api:environment-versions": route(TEAM_ENV, Op("POST", "lin", ok=201, too_weak="ada", body={"description": "v2"})),
    "api:environment-set-default": route(PLATFORM_ENV, Op("POST", "root", too_weak="lin", outsider=403)),
    "api:environment-rebuild": route(FAILED_ENV, Op("POST", "lin", too_weak="ada")),
    "api:environment-build": route(TEAM_ENV, Op("GET", "vic")),
    "api:environment-usage": route(TEAM_ENV, Op("GET", "vic")),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    root, team = world.users["root"], world.project.team
    now = timezone.now()
    ready = EnvironmentBuild.objects.create(
        requirements_hash="a" * 64,
        requirements="cowsay==6.1",
        status=BuildStatus.READY,
        progress=100,
        log="Installed 1 package\n",
        finished_at=now,
    )
    failed = EnvironmentBuild.objects.create(
        requirements_hash="b" * 64,
        requirements="no-such-package==0",
        status=BuildStatus.FAILED,
        progress=40,
        log="No solution found\n",
        error="no-such-package was not found",
        finished_at=now,
    )
    world.extra["platform_env"] = Environment.objects.create(name="base", state=EnvironmentState.READY, created_by=root)
    world.extra["team_env"] = Environment.objects.create(
        team=team, name="demo-env", requirements="cowsay==6.1", build=ready, state=EnvironmentState.READY
    )
    world.extra["failed_env"] = Environment.objects.create(
        team=team,
        name="broken",
        requirements="no-such-package==0",
        build=failed,
        state=EnvironmentState.FAILED,
        state_reason=failed.error,
    )
