"""The vocabulary of the authorization matrix (tests/access/test_matrix.py), shared with
the apps' matrix extensions: tests/<app>/matrix.py defines MATRIX (route name -> Route) and
extend_world(world, monkeypatch), which adds that app's objects to world.extra."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apps.accounts.models import ApiToken, User
from apps.launches.models import Launch, Sweep, Template
from apps.projects.models import Project


# --- the vocabulary of the matrix ------------------------------------------------------
@dataclass(frozen=True)
class World:
    """What URLs and bodies are built from: the conftest people and projects (demo/demo
    linked to MLflow experiment "1"), an API token of ada's (for the revoke page), the
    global sklearn-digits template and a copy of it owned by team demo, and live launches
    and sweeps of demo/demo: ada's (running), and bea's (queued; a second member of demo,
    so that a member can be shown someone else's launch). Rows made with the ORM: reading
    them needs neither MLflow nor a broker."""

    users: Mapping[str, User]
    project: Project
    ada_token: ApiToken
    template: Template  # global
    team_template: Template  # team demo's
    launch: Launch  # ada's, running
    others_launch: Launch  # bea's, queued
    sweep: Sweep  # ada's, one running trial
    others_sweep: Sweep  # bea's, one pending trial
    # Objects added by the apps' matrix extensions (tests/<app>/matrix.py: extend_world).
    extra: dict[str, Any] = field(default_factory=dict)


Codes = int | tuple[int, ...]
Kwargs = Mapping[str, Any] | Callable[[World], Mapping[str, Any]]
Body = Mapping[str, Any] | Callable[[World], Mapping[str, Any]]


@dataclass(frozen=True)
class Op:
    """One HTTP method of one route, and who gets what."""

    method: str
    allowed: str  # the weakest user who may: vic < ada < lin < root
    ok: Codes = 200  # what `allowed` gets (pages answer a successful form POST with 302)
    too_weak: str | None = None  # a user who can see the object but lacks the right: 403
    outsider: Codes = 404  # what omar gets
    body: Body | None = None  # valid data, so that `allowed` succeeds
    public: Codes | None = None  # what an anonymous caller gets, only for public operations
    admin: Codes | None = None  # what root gets, where it differs from `ok`
    note: str = ""  # tells apart two operations with the same method
    kwargs: Kwargs | None = None  # this operation's URL kwargs, where they differ from the route's


@dataclass(frozen=True)
class Route:
    kwargs: Kwargs
    ops: tuple[Op, ...]


def route(kwargs: Kwargs, *ops: Op) -> Route:
    return Route(kwargs, ops)


NONE: dict[str, Any] = {}
DEMO = {"slug": "demo"}
DEMO_PROJECT = {"team": "demo", "slug": "demo"}
VIC_IN_DEMO = {"slug": "demo", "username": "vic"}
API_VIC_IN_DEMO = {"team_slug": "demo", "username": "vic"}
ANSWERED = (200, 503)  # /readyz is 503 while MLflow is down, as it is in these tests
