"""Audit verbs are AuditVerb members: a string the enum does not list cannot be recorded, the
stored value is the dotted string rows have always carried, and the page offers the list."""

from __future__ import annotations

import pytest

from apps.accounts import services
from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_it_refuses_a_verb_that_is_not_a_member(root: User, team: Team) -> None:
    with pytest.raises(TypeError):
        record(root, "team.updatd", team, team=team)  # type: ignore[arg-type]
    # A listed verb as a bare string is refused too: the enum is the one spelling.
    with pytest.raises(TypeError):
        record(root, "team.updated", team, team=team)  # type: ignore[arg-type]
    assert not AuditEvent.objects.exists()


def test_a_service_stores_the_verb_as_its_dotted_string(root: User, team: Team) -> None:
    services.update_team(root, team, gpu_budget=3)
    stored = AuditEvent.objects.values_list("verb", flat=True).get()
    assert stored == "team.updated"
    assert type(stored) is str
    assert AuditVerb(stored) is AuditVerb.TEAM_UPDATED


def test_every_stored_string_is_unique_and_dotted() -> None:
    values = [v.value for v in AuditVerb]
    assert len(values) == len(set(values))
    assert all("." in v and v == v.lower() and len(v) <= 64 for v in values)


def test_the_audit_page_offers_every_verb_as_a_filter(root: User) -> None:
    page = client_for(root).get("/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    for verb in AuditVerb:
        assert f">{verb.value}</option>" in html
