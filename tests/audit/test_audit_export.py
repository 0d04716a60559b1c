"""The audit log's CSV export and its extra filters: the same scoping as the page (leads:
their teams' events), the page's filters, and cells a spreadsheet will not execute."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def exported(user: User, query: str = "") -> list[dict[str, str]]:
    response = client_for(user).get(f"/audit/export.csv{query}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="plinth-audit-')
    content = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return list(csv.DictReader(io.StringIO(content.decode())))


@pytest.fixture
def events(root: User, lin: User, omar: User, team: Team, other_team: Team) -> None:
    services.add_member(lin, team, username="omar", role="viewer")
    services.update_team(root, other_team, gpu_budget=6)
    services.create_api_token(lin, name='=HYPERLINK("http://evil")')


def test_a_lead_exports_only_their_teams_events(events: None, lin: User) -> None:
    rows = exported(lin)
    assert rows and {r["team"] for r in rows} == {"demo"}
    assert {r["verb"] for r in rows} == {"team.member_added"}


def test_the_export_applies_the_pages_filters(events: None, root: User) -> None:
    rows = exported(root, "?verb=team.updated&team=other")
    assert [(r["team"], r["before"], r["after"]) for r in rows] == [
        (
            "other",
            '{"gpu_budget": 4, "name": "Other team", "slug": "other"}',
            '{"gpu_budget": 6, "name": "Other team", "slug": "other"}',
        )
    ]
    assert exported(root, "?actor=lin&target_type=accounts.membership")[0]["target"] == "omar in demo as viewer"


def test_cells_that_look_like_formulas_are_defused(events: None, root: User) -> None:
    [row] = [r for r in exported(root) if r["verb"] == "token.created"]
    assert row["target"].startswith("'=HYPERLINK")


def test_date_and_request_filters(events: None, root: User) -> None:
    today = timezone.now().date()
    assert len(exported(root, f"?since={today}&until={today}")) == 3
    assert exported(root, f"?since={today + timedelta(days=1)}") == []
    request_id = AuditEvent.objects.filter(verb="team.member_added").get().request_id
    page = client_for(root).get("/audit/", {"request_id": request_id or "none", "q": "omar"})
    assert [e.verb for e in page.context["page"].object_list] == (["team.member_added"] if request_id else [])
    assert "Export CSV" in page.content.decode()


def test_members_cannot_export(events: None, ada: User) -> None:
    assert client_for(ada).get("/audit/export.csv").status_code == 403
