"""The audit log's "Change" column reads as a before → after diff of the fields that
changed, never as Python dict text; the API keeps the JSON objects."""

from __future__ import annotations

import re

import pytest

from apps.accounts import services
from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


def change_cells(page: str) -> list[str]:
    return re.findall(r'<td class="change">(.*?)</td>', page, re.S)


def test_a_changed_field_reads_as_before_arrow_after(root: User, team: Team) -> None:
    budget = team.gpu_budget
    services.update_team(root, team, gpu_budget=budget + 2)
    event = AuditEvent.objects.get(verb="team.updated")
    assert event.before and event.after  # the service recorded both sides

    cells = change_cells(client_for(root).get("/audit/").content.decode())
    shown = next(cell for cell in cells if "gpu_budget" in cell)
    plain = re.sub(r"<[^>]+>", "", shown)
    assert re.search(rf"gpu_budget:\s*{budget}\s*→\s*{budget + 2}", plain), plain
    assert "{" not in plain and "'" not in plain, "no dict text on the page"
    # Fields that did not change are not listed.
    for key, value in event.before.items():
        if event.after.get(key) == value:
            assert f"{key}:" not in plain

    api_event = next(e for e in api_for(root).get("/api/v1/audit/").json()["results"] if e["verb"] == "team.updated")
    assert api_event["before"]["gpu_budget"] == budget and api_event["after"]["gpu_budget"] == budget + 2


def test_a_created_thing_shows_only_its_new_values(root: User, lin: User, team: Team) -> None:
    services.add_member(lin, team, username="root", role="viewer")
    event = AuditEvent.objects.get(verb="team.member_added")
    cells = change_cells(client_for(root).get("/audit/").content.decode())
    plain = [re.sub(r"<[^>]+>", "", c) for c in cells]
    shown = next(p for p in plain if "viewer" in p)
    assert event.before is None and event.after == {"user": "root", "role": "viewer"}
    assert "→" not in shown, "nothing before: no arrow"
    assert re.search(r"user:\s*root", shown) and re.search(r"role:\s*viewer", shown), shown
    assert "{" not in shown
