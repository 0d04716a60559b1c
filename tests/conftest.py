"""Shared fixtures: the named users of every test (one per role), their teams and projects.

ada   member of team demo          lin   lead of team demo
vic   viewer of team demo          omar  member of team other (an outsider to demo)
root  platform admin (no team)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User
from apps.projects.models import Project
from tests.mlflow_process import free_port, running_mlflow_server

PASSWORD = "correct-horse-battery"
# A port nothing listens on: by default every test sees MLflow as down, deterministically.
MLFLOW_DOWN = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _mlflow_down_by_default(settings: Any) -> None:
    settings.MLFLOW_TRACKING_URI = MLFLOW_DOWN
    settings.MLFLOW_UI_URL = MLFLOW_DOWN
    settings.MLFLOW_TIMEOUT = 2.0
    # Fast hashing: tests create many users; production keeps Django's default PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_gateway_counts_from_other_tests() -> None:
    """The gateway buffers request counts per process; a test starts with none, so counts of
    a revision an earlier test rolled back are never written under this one."""
    from apps.deployments import gateway, stats

    stats.discard()
    gateway.clear_routes()


def postgres_required() -> bool:
    """CI sets PLINTH_REQUIRE_POSTGRES=1: then a test that needs PostgreSQL fails instead of
    skipping, so losing CI's DATABASE_URL cannot silently turn the race tests off."""
    return os.environ.get("PLINTH_REQUIRE_POSTGRES", "") == "1"


def skip_without_postgres(reason: str) -> None:
    """Skip the running test for `reason` (PostgreSQL is missing), or fail it when required."""
    if postgres_required():
        pytest.fail(f"PLINTH_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: a race test on SQLite starts no servers only to be skipped.
    marker = item.get_closest_marker("postgres")
    if marker is None:
        return
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.postgresql":
        why = marker.args[0] if marker.args else "needs PostgreSQL"
        skip_without_postgres(f"the database is {engine.rsplit('.', 1)[-1]}; {why}")


def make_user(username: str, **extra: Any) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.test", **extra)
    return user


@pytest.fixture
def team(db: None) -> Team:
    return Team.objects.create(slug="demo", name="Demo team", gpu_budget=8)


@pytest.fixture
def other_team(db: None) -> Team:
    return Team.objects.create(slug="other", name="Other team", gpu_budget=4)


@pytest.fixture
def ada(team: Team) -> User:
    user = make_user("ada")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def lin(team: Team) -> User:
    user = make_user("lin")
    Membership.objects.create(team=team, user=user, role=Role.LEAD)
    return user


@pytest.fixture
def vic(team: Team) -> User:
    user = make_user("vic")
    Membership.objects.create(team=team, user=user, role=Role.VIEWER)
    return user


@pytest.fixture
def omar(other_team: Team) -> User:
    user = make_user("omar")
    Membership.objects.create(team=other_team, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def root(db: None) -> User:
    return make_user("root", is_platform_admin=True)


@pytest.fixture
def project(team: Team) -> Project:
    return Project.objects.create(
        team=team,
        slug="demo",
        name="Demo project",
        gpu_quota=2,
        namespace="plinth-demo-demo",
        mlflow_experiment_name="demo/demo",
    )


@pytest.fixture
def other_project(other_team: Team) -> Project:
    return Project.objects.create(
        team=other_team,
        slug="other",
        name="Other project",
        gpu_quota=1,
        namespace="plinth-other-other",
        mlflow_experiment_name="other/other",
    )


@pytest.fixture
def people(ada: User, lin: User, vic: User, omar: User, root: User) -> dict[str, User]:
    return {"ada": ada, "lin": lin, "vic": vic, "omar": omar, "root": root}


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def api_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


# --- a real MLflow tracking server, started once per test session ----------------------
_free_port = free_port  # what tests import from here


# The SQLAlchemy URL of each test server's backend store, by server URL (for the tests of
# direct store reads, apps.tracking.store).
MLFLOW_STORES: dict[str, str] = {}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on a fresh SQLite store; yields its URL (its store: MLFLOW_STORES)."""
    root_dir = tmp_path_factory.mktemp("mlflow")
    with running_mlflow_server(root_dir) as url:
        MLFLOW_STORES[url] = f"sqlite:///{root_dir / 'mlflow.db'}"
        yield url


@pytest.fixture
def mlflow_up(settings: Any, mlflow_server: str) -> str:
    """Point the portal at the real MLflow server for this test."""
    settings.MLFLOW_TRACKING_URI = mlflow_server
    settings.MLFLOW_UI_URL = mlflow_server
    settings.MLFLOW_TIMEOUT = 10.0
    return mlflow_server
