"""The registry's routes in the authorization matrix (tests/access/test_matrix.py).

The world gets a registered model `digits` of demo/demo in a FakeRegistry (MLflow's
registry at the gateway's level): versions 1-5, `champion` → 2 (moved there from 1, as the
history records), bea's pending request for version 3 and ada's for version 5. A member
asks for version 4 (or rolls champion back to 1); approving and rejecting are for the
approvers (lin, root), never for members or viewers, and never for the requester."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.registry.models import AliasHistory, PromotionRequest, RegisteredModel, Source
from tests.access.matrix_vocab import DEMO, DEMO_PROJECT, NONE, Kwargs, Op, Route, World, route
from tests.registry.fakes import install

MODEL = {"name": "digits"}
OTHERS_REQUEST: Kwargs = lambda w: {"pk": w.extra["others_request"].pk}  # noqa: E731 - a table of small functions
OWN_REQUEST: Kwargs = lambda w: {"pk": w.extra["own_request"].pk}  # noqa: E731
PROJECT_PK: Kwargs = lambda w: {"pk": w.project.pk}  # noqa: E731
ASK = {"version": 4, "alias": "champion", "justification": "better accuracy on the holdout set"}
POLICY_FORM = {"approvers": "", "required_approvals": 1, "expiry_days": 5, "allowed_aliases": "champion, staging"}
WEBHOOK_FORM = {"url": "https://hooks.example.test/plinth", "secret": "s" * 24, "is_active": "on"}

MATRIX: dict[str, Route] = {
    # --- pages: viewers read, members ask, approvers decide, leads set the rules -----------
    "registry:index": route(NONE, Op("GET", "vic", outsider=200)),
    # Everyone has an inbox; omar's is simply empty.
    "registry:inbox": route(NONE, Op("GET", "vic", outsider=200)),
    "registry:project": route(DEMO_PROJECT, Op("GET", "vic")),
    "registry:attach": route(DEMO_PROJECT, Op("POST", "lin", ok=302, too_weak="ada", body={"name": "outside"})),
    "registry:policy": route(
        DEMO_PROJECT,
        Op("GET", "vic"),
        Op("POST", "lin", ok=302, too_weak="ada", body=POLICY_FORM),
    ),
    # The webhook's page shows part of the signing secret: leads only, reading included.
    "registry:webhook": route(
        DEMO,
        Op("GET", "lin", too_weak="ada"),
        Op("POST", "lin", ok=302, too_weak="ada", body=WEBHOOK_FORM),
    ),
    "registry:model": route(MODEL, Op("GET", "vic")),
    "registry:request-create": route(
        MODEL,
        Op("GET", "ada", too_weak="vic"),
        Op("POST", "ada", ok=302, too_weak="vic", body=ASK),
    ),
    "registry:rollback": route(
        MODEL,
        Op("POST", "ada", ok=302, too_weak="vic", body={"alias": "champion", "justification": "v2 misbehaves"}),
        Op(
            "POST",
            "lin",
            ok=302,
            too_weak="ada",
            body={"alias": "champion", "justification": "v2 is down", "emergency": "on"},
            note="emergency",
        ),
    ),
    "registry:request": route(OTHERS_REQUEST, Op("GET", "vic")),
    "registry:request-approve": route(OTHERS_REQUEST, Op("POST", "lin", ok=302, too_weak="ada")),
    "registry:request-reject": route(OTHERS_REQUEST, Op("POST", "lin", ok=302, too_weak="ada")),
    "registry:request-withdraw": route(
        OTHERS_REQUEST,
        Op("POST", "lin", ok=302, too_weak="ada", note="someone else's"),
        Op("POST", "ada", ok=302, too_weak="vic", kwargs=OWN_REQUEST, note="own"),
    ),
    # --- API ---------------------------------------------------------------------------------
    "api:registered-model-list": route(NONE, Op("GET", "vic", outsider=200)),
    "api:registered-model-detail": route(MODEL, Op("GET", "vic")),
    "api:alias-history": route(MODEL, Op("GET", "vic")),
    "api:alias-rollback": route(
        {"name": "digits", "alias": "champion"},
        Op("POST", "ada", ok=201, too_weak="vic", body={"justification": "v2 misbehaves"}),
        Op("POST", "lin", ok=201, too_weak="ada", body={"justification": "down", "emergency": True}, note="emergency"),
    ),
    "api:promotion-policy": route(
        PROJECT_PK,
        Op("GET", "vic"),
        Op("PATCH", "lin", too_weak="ada", body={"expiry_days": 3}),
    ),
    "api:promotion-list": route(
        NONE,
        Op("GET", "vic", outsider=200),
        Op("POST", "ada", ok=201, too_weak="vic", body={"model": "digits", **ASK}),
    ),
    "api:promotion-detail": route(OTHERS_REQUEST, Op("GET", "vic")),
    "api:promotion-approve": route(OTHERS_REQUEST, Op("POST", "lin", too_weak="ada")),
    "api:promotion-reject": route(OTHERS_REQUEST, Op("POST", "lin", too_weak="ada")),
    "api:promotion-withdraw": route(
        OTHERS_REQUEST,
        Op("POST", "lin", too_weak="ada", note="someone else's"),
        Op("POST", "ada", too_weak="vic", kwargs=OWN_REQUEST, note="own"),
    ),
}


def _pending(model: RegisteredModel, user: User, version: int) -> PromotionRequest:
    now = timezone.now()
    return PromotionRequest.objects.create(
        project=model.project,
        model=model,
        version=version,
        alias="champion",
        justification=f"{user.username} thinks v{version} is better",
        requested_by=user,
        evidence={"alias": "champion", "candidate": {"version": version, "metrics": {}}, "holder": None},
        expires_at=now + timedelta(days=7),
    )


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch)
    fake.add_model("digits", world.project.full_slug, [{"accuracy": 0.80 + i / 100} for i in range(5)])
    fake.add_model("outside", None, [{"accuracy": 0.7}])
    fake.models["digits"]["aliases"]["champion"] = 2
    model = RegisteredModel.objects.create(name="digits", project=world.project)
    earlier = timezone.now() - timedelta(days=3)
    AliasHistory.objects.create(
        model=model, alias="champion", version=1, valid_from=earlier, valid_to=earlier, source=Source.OBSERVED
    )
    AliasHistory.objects.create(model=model, alias="champion", version=2, previous_version=1, valid_from=earlier)
    bea = User.objects.get(username="bea")
    world.extra["others_request"] = _pending(model, bea, 3)
    world.extra["own_request"] = _pending(model, world.users["ada"], 5)
