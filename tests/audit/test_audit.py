"""The audit log is append-only and scoped: admins see everything, leads their teams."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.core.management import call_command
from django.test import RequestFactory

from apps.accounts import services
from apps.accounts.models import Membership, Team, User
from apps.audit.models import AppendOnlyError, AuditEvent
from tests.conftest import api_for, client_for, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(lin: User, omar: User, root: User, team: Team, other_team: Team) -> None:
    Membership.objects.create(team=other_team, user=make_user("olga"), role="lead")
    services.add_member(lin, team, username="omar", role="viewer")
    services.update_team(root, other_team, gpu_budget=6)


def test_an_event_cannot_be_changed_or_deleted(events: None) -> None:
    event = AuditEvent.objects.first()
    assert event is not None
    event.verb = "tampered"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().update(verb="tampered")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert not AuditEvent.objects.filter(verb="tampered").exists()


def test_the_django_admin_offers_no_way_to_add_change_or_delete(root: User) -> None:
    request = RequestFactory().get("/admin/audit/auditevent/")
    request.user = root
    model_admin = site._registry[AuditEvent]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_a_platform_admin_sees_every_event(events: None, root: User) -> None:
    response = api_for(root).get("/api/v1/audit/")
    assert response.status_code == 200
    teams = {row["team"] for row in response.json()["results"]}
    assert teams == {"demo", "other"}


def test_a_lead_sees_only_their_teams_events(events: None, lin: User) -> None:
    rows = api_for(lin).get("/api/v1/audit/").json()["results"]
    assert rows and {row["team"] for row in rows} == {"demo"}
    assert client_for(lin).get("/audit/?team=other").context["page"].paginator.count == 0


def test_members_and_viewers_do_not_see_the_audit_log(events: None, ada: User, vic: User) -> None:
    assert api_for(ada).get("/api/v1/audit/").status_code == 403
    assert client_for(vic).get("/audit/").status_code == 403


def test_the_audit_log_filters_by_actor_team_and_verb(events: None, root: User) -> None:
    api = api_for(root)
    by_actor = api.get("/api/v1/audit/", {"actor": "lin"}).json()["results"]
    assert [row["verb"] for row in by_actor] == ["team.member_added"]
    by_verb = api.get("/api/v1/audit/", {"verb": "team.updated"}).json()["results"]
    assert [(row["team"], row["before"]["gpu_budget"], row["after"]["gpu_budget"]) for row in by_verb] == [
        ("other", 4, 6)
    ]
    page = client_for(root).get("/audit/", {"team": "demo", "verb": "team.member_added"})
    assert page.status_code == 200
    assert [e.target_label for e in page.context["page"].object_list] == ["omar in demo as viewer"]


def test_seed_demo_is_idempotent() -> None:
    call_command("seed_demo")
    counts = (User.objects.count(), Team.objects.count(), Membership.objects.count(), AuditEvent.objects.count())
    call_command("seed_demo")
    assert (
        User.objects.count(),
        Team.objects.count(),
        Membership.objects.count(),
        AuditEvent.objects.count(),
    ) == counts
    roles = dict(Membership.objects.filter(team__slug="demo").values_list("user__username", "role"))
    assert roles == {"ada": "member", "lin": "lead"}  # vic waits to be added by the lead
    assert User.objects.get(username="root").is_platform_admin
    assert User.objects.get(username="lin").check_password("plinth-demo")


def test_seed_demo_brings_an_older_demo_template_up_to_date(django_capture_on_commit_callbacks: Any) -> None:
    """A demo seeded before templates suggested an objective (and before sklearn-digits
    took sleep_per_epoch) gets both on the next seed; a template someone changed keeps its
    command; an up-to-date one is left alone."""
    from apps.launches.demo import SKLEARN_DIGITS
    from apps.launches.models import Template

    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
    template = Template.objects.get(team__isnull=True, slug=SKLEARN_DIGITS["slug"])
    old_command = [part for part in template.command if "sleep_per_epoch" not in part]
    old_parameters = {k: v for k, v in template.parameters.items() if k != "sleep_per_epoch"}
    Template.objects.filter(pk=template.pk).update(objective={}, command=old_command, parameters=old_parameters)

    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
    template.refresh_from_db()
    assert template.objective == {"metric": "loss", "direction": "min"}
    assert template.command == SKLEARN_DIGITS["command"] and "sleep_per_epoch" in template.parameters
    assert AuditEvent.objects.filter(verb="template.updated").count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
    assert AuditEvent.objects.filter(verb="template.updated").count() == 1

    changed = ["python", "my_own_train.py"]
    Template.objects.filter(pk=template.pk).update(command=changed, parameters=old_parameters)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
    template.refresh_from_db()
    assert template.command == changed and "sleep_per_epoch" not in template.parameters
