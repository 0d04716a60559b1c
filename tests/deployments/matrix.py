"""The deployments' routes in the authorization matrix (tests/access/test_matrix.py).

The world gets deployment `digits-api` of demo/demo (made by ada, following digits@champion)
serving version 2 (revision 2, 100 %) with revision 1 (version 1) still warm, so a rollback
has somewhere to go; a serving key `ci`; and a FakeServing in place of the serving backend
(revision 2's model server up). Viewers read; members, leads and platform admins change,
try, roll back, delete and manage keys; other teams get 404."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus, ServingKey
from tests.access.matrix_vocab import DEMO_PROJECT, NONE, Kwargs, Op, Route, World, route
from tests.deployments.fakes import install

DEPLOYMENT: Kwargs = lambda w: {"pk": w.extra["deployment"].pk}  # noqa: E731 - a table of small functions
KEY: Kwargs = lambda w: {"pk": w.extra["deployment"].pk, "key": w.extra["serving_key"].pk}  # noqa: E731
SETTINGS = {
    "alias": "champion",
    "version": "",
    "canary_percent": 20,
    "canary_minutes": 1,
    "max_error_rate": 0.05,
    "max_p95_ms": 500,
    "min_replicas": 1,
    "max_replicas": 1,
    "input_example": "",
}
PAGE_NEW = {**SETTINGS, "name": "fresh-api", "model": "digits"}
API_NEW = {"project": "demo/demo", "name": "fresh-api", "model": "digits", "canary_percent": 20}
TRY = {"body": '{"dataframe_split": {"columns": ["x"], "data": [[1]]}}'}

MATRIX: dict[str, Route] = {
    # --- pages ---------------------------------------------------------------------------
    # Every deployment the user may see: outsiders get the page, without demo's rows.
    "deployments:list": route(NONE, Op("GET", "vic", outsider=200)),
    "deployments:project": route(DEMO_PROJECT, Op("GET", "vic")),
    "deployments:create": route(
        DEMO_PROJECT,
        Op("GET", "ada", too_weak="vic"),
        Op("POST", "ada", ok=302, too_weak="vic", body=PAGE_NEW),
    ),
    "deployments:detail": route(DEPLOYMENT, Op("GET", "vic")),
    "deployments:edit": route(
        DEPLOYMENT,
        Op("GET", "ada", too_weak="vic"),
        Op("POST", "ada", ok=302, too_weak="vic", body=SETTINGS),
    ),
    "deployments:delete": route(DEPLOYMENT, Op("POST", "ada", ok=302, too_weak="vic")),
    "deployments:rollback": route(DEPLOYMENT, Op("POST", "ada", ok=302, too_weak="vic")),
    # Sending a prediction is using the deployment: members, like the gateway's callers.
    "deployments:try": route(DEPLOYMENT, Op("POST", "ada", ok=302, too_weak="vic", body=TRY)),
    "deployments:key-create": route(DEPLOYMENT, Op("POST", "ada", ok=302, too_weak="vic", body={"name": "batch"})),
    "deployments:key-revoke": route(KEY, Op("POST", "ada", ok=302, too_weak="vic")),
    # --- the inference gateway ------------------------------------------------------------------
    # Public in the matrix's sense: it never sends anyone to sign in. It takes an API token or
    # a serving key in the Authorization header and no session, so every caller here (signed
    # in through a session, or anonymous) gets 401; who may call it with a token or a key is
    # tested in tests/deployments/test_gateway*.py.
    "serve:invoke": route(
        lambda w: {"team": "demo", "project": "demo", "deployment": w.extra["deployment"].name},
        Op("POST", "ada", ok=401, outsider=401, public=401, body=TRY, note="sessions are not credentials"),
    ),
    # --- API ---------------------------------------------------------------------------------
    "api:deployment-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "ada", ok=201, too_weak="vic", body=API_NEW),
    ),
    "api:deployment-detail": route(
        DEPLOYMENT,
        Op("GET", "vic"),
        Op("PATCH", "ada", too_weak="vic", body={"canary_percent": 20}),
        Op("DELETE", "ada", ok=202, too_weak="vic"),
    ),
    "api:deployment-rollback": route(DEPLOYMENT, Op("POST", "ada", too_weak="vic")),
    "api:deployment-metrics": route(DEPLOYMENT, Op("GET", "vic")),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    ada = world.users["ada"]
    deployment = Deployment.objects.create(
        project=world.project,
        name="digits-api",
        model_name="digits",
        backend=world.project.backend,
        created_by=ada,
        status=DeploymentStatus.SERVING,
    )
    earlier = timezone.now() - timedelta(minutes=10)
    Revision.objects.create(deployment=deployment, number=1, version=1, status=RevisionStatus.READY, serving_at=earlier)
    current = Revision.objects.create(
        deployment=deployment, number=2, version=2, status=RevisionStatus.SERVING, traffic=100, serving_at=earlier
    )
    fake.start(current)
    world.extra["deployment"] = deployment
    world.extra["serving_key"] = ServingKey.objects.create(
        deployment=deployment, name="ci", prefix="plsk_abcdef", digest="0" * 64, created_by=ada
    )
