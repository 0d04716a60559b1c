"""The authorization matrix of the admin console (and of the other routes issue 6 added:
the audit log's CSV export and the project page's access fragment), in the vocabulary of
tests/access/matrix_vocab.py.

Who: the console is for leads (their teams) and platform admins. Omar leads no team, so
every console route answers him 403 whatever the id (nothing to learn from it); a lead of
another team gets 404 for team demo's objects (tests/console/test_idor.py). Members and
viewers get 403. Accounts (create, deactivate, tokens) and SSO mappings and budgets are
for platform admins only: leads get 403 there."""

from __future__ import annotations

import pytest

from apps.access.roles import Role
from apps.accounts.models import SsoGroupMapping
from tests.access.matrix_vocab import DEMO, DEMO_PROJECT, NONE, Op, Route, World, route

VIC = {"username": "vic"}
TEMPLATE_BODY = {
    "name": "Renamed",
    "description": "",
    "image": "python:3.12",
    "command": '["python", "-V"]',
    "parameters": "{}",
    "default_resources": "{}",
    "max_resources": "{}",
    "max_runtime_seconds": 600,
    "backends": ["local"],
    "is_active": "on",
}
NEW_TEMPLATE = {**TEMPLATE_BODY, "team": "demo", "slug": "fresh"}
NEW_GLOBAL_TEMPLATE = {**TEMPLATE_BODY, "team": "", "slug": "fresh-global"}
NEW_USER = {"username": "newbie", "email": "newbie@example.test", "password": ""}

MATRIX: dict[str, Route] = {
    "console:index": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:user-list": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:user-create": route(
        NONE,
        Op("GET", "root", too_weak="lin", outsider=403),
        Op("POST", "root", ok=302, too_weak="lin", outsider=403, body=NEW_USER),
    ),
    # A lead sees the people of the teams they lead (vic is in demo).
    "console:user-detail": route(VIC, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:user-deactivate": route(VIC, Op("POST", "root", ok=302, too_weak="lin", outsider=403)),
    "console:user-reactivate": route(VIC, Op("POST", "root", ok=302, too_weak="lin", outsider=403)),
    "console:user-unlock": route(VIC, Op("POST", "root", ok=302, too_weak="lin", outsider=403)),
    # Platform admins revoke anyone's token (the owner does it from their account page).
    "console:token-revoke": route(
        lambda w: {"pk": w.ada_token.pk}, Op("POST", "root", ok=302, too_weak="lin", outsider=403)
    ),
    "console:team-list": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:team-detail": route(DEMO, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:team-budget": route(
        DEMO, Op("POST", "root", ok=302, too_weak="lin", outsider=403, body={"gpu_budget": 12})
    ),
    "console:sso-add": route(
        DEMO,
        Op("POST", "root", ok=302, too_weak="lin", outsider=403, body={"group": "ml-viewers", "role": "viewer"}),
    ),
    "console:sso-delete": route(
        lambda w: {"slug": "demo", "pk": w.extra["sso_mapping"].pk},
        Op("POST", "root", ok=302, too_weak="lin", outsider=403),
    ),
    "console:project-list": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:project-detail": route(DEMO_PROJECT, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:project-sync": route(DEMO_PROJECT, Op("POST", "lin", ok=302, too_weak="ada", outsider=403)),
    "console:template-list": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "console:template-create": route(
        NONE,
        Op("GET", "lin", too_weak="ada", outsider=403),
        Op("POST", "lin", ok=302, too_weak="ada", outsider=403, body=NEW_TEMPLATE, note="team's"),
        Op("POST", "root", ok=302, too_weak="lin", outsider=403, body=NEW_GLOBAL_TEMPLATE, note="global"),
    ),
    "console:template-edit": route(
        lambda w: {"pk": w.team_template.pk},
        Op("GET", "lin", too_weak="ada", outsider=403, note="team's"),
        Op("POST", "lin", ok=302, too_weak="ada", outsider=403, body=TEMPLATE_BODY, note="team's"),
        Op("GET", "root", too_weak="lin", outsider=403, kwargs=lambda w: {"pk": w.template.pk}, note="global"),
        Op(
            "POST",
            "root",
            ok=302,
            too_weak="lin",
            outsider=403,
            body=TEMPLATE_BODY,
            kwargs=lambda w: {"pk": w.template.pk},
            note="global",
        ),
    ),
    # The audit log's CSV: who may read the log (leads: their teams' events).
    "audit-export": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    # The access card's former address: anyone who sees the project is sent to the project
    # page (whose `#access` fragment htmx asks for), after the same access check.
    "projects:access-sync": route(DEMO_PROJECT, Op("GET", "vic", ok=302)),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SSO group mapping on team demo (for the delete route)."""
    world.extra["sso_mapping"] = SsoGroupMapping.objects.create(
        team=world.project.team, group="ml-researchers", role=Role.MEMBER
    )
