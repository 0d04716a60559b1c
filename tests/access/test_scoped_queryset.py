"""The one scoped queryset (apps.access.querysets): who sees which rows, for each action.

ada member, lin lead, vic viewer of team demo; omar member of team other; root platform
admin (no team). Rows of team demo, of team other, and rows of no team where a model has
them (global templates, free GPUs, events and findings without a team)."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope, scope_of
from apps.access.roles import Action
from apps.accounts.models import Membership, Team, User
from apps.audit.models import AuditEvent
from apps.gpus.models import Gpu, IdleFinding
from apps.launches.models import Template
from apps.projects.models import Project

ACTIONS = list(Action)


def scoped_models() -> list[type[Any]]:
    return [m for m in apps.get_models() if isinstance(m._default_manager.all(), ScopedQuerySet)]


def test_every_model_with_for_user_gets_it_from_the_one_scoped_queryset() -> None:
    # Any queryset method called for_user must be ScopedQuerySet's: no model writes its own.
    for model in apps.get_models():
        method = getattr(type(model._default_manager.all()), "for_user", None)
        if method is not None:
            assert method is ScopedQuerySet.for_user, model.__name__


def test_every_scoped_model_declares_where_its_team_is() -> None:
    models = scoped_models()
    assert {m.__name__ for m in models} >= {"Team", "Project", "Launch", "Template", "AuditEvent", "Gpu"}
    for model in models:
        assert isinstance(scope_of(model), TeamScope), model.__name__


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS)
def test_anonymous_users_see_nothing(action: Action, project: Project, other_project: Project) -> None:
    Template.objects.create(slug="global", image="python:3.12", command=["true"], backends=["local"])
    Gpu.objects.create(node="n1", index=0)
    for model in scoped_models():
        assert list(model._default_manager.for_user(AnonymousUser(), action)) == [], model.__name__


@pytest.mark.django_db
def test_a_deactivated_user_sees_nothing_even_a_platform_admin(
    lin: User, root: User, project: Project, team: Team
) -> None:
    Template.objects.create(slug="global", image="python:3.12", command=["true"], backends=["local"])
    for user in (lin, root):
        assert Project.objects.for_user(user).exists()
        user.is_active = False
        user.save()
        for model in scoped_models():
            assert not model._default_manager.for_user(user, Action.VIEW).exists(), (user.username, model.__name__)


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS)
def test_a_platform_admin_sees_every_row_for_every_action(
    action: Action, root: User, project: Project, other_project: Project, team: Team
) -> None:
    Template.objects.create(slug="global", image="python:3.12", command=["true"], backends=["local"])
    Gpu.objects.create(node="n1", index=0, allocated=True, namespace="outside")  # no team
    AuditEvent.objects.create(actor_label="cron", verb="system.note", target_type="t", target_id="1")
    for model in scoped_models():
        everything = set(model._default_manager.values_list("pk", flat=True))
        assert set(model._default_manager.for_user(root, action).values_list("pk", flat=True)) == everything


# What each role may do in its team, as apps.access.roles states it (viewer < member <
# lead; ADMIN needs the platform flag). omar's team is another one.
ALLOWED = {
    "vic": {Action.VIEW},
    "ada": {Action.VIEW, Action.LAUNCH},
    "lin": {Action.VIEW, Action.LAUNCH, Action.MANAGE},
    "omar": set(),
}


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_team_members_see_their_teams_rows_as_far_as_their_role_goes(
    name: str, action: Action, people: dict[str, User], project: Project, other_project: Project
) -> None:
    user = people[name]
    allowed = action in ALLOWED[name]
    assert Project.objects.for_user(user, action).filter(pk=project.pk).exists() is allowed
    assert Team.objects.for_user(user, action).filter(pk=project.team_id).exists() is allowed
    memberships = Membership.objects.for_user(user, action).filter(team=project.team)
    assert memberships.count() == (Membership.objects.filter(team=project.team).count() if allowed else 0)


@pytest.mark.django_db
@pytest.mark.parametrize("action", [Action.VIEW, Action.LAUNCH])
def test_an_outsider_sees_their_own_team_and_not_the_other(
    action: Action, omar: User, project: Project, other_project: Project
) -> None:
    assert list(Project.objects.for_user(omar, action)) == [other_project]


@pytest.mark.django_db
def test_global_templates_are_seen_by_everyone_signed_in_and_changed_by_platform_admins_only(
    ada: User, lin: User, omar: User, root: User, team: Team
) -> None:
    shared = Template.objects.create(slug="shared", image="python:3.12", command=["true"], backends=["local"])
    own = Template.objects.create(team=team, slug="own", image="python:3.12", command=["true"], backends=["local"])
    assert set(Template.objects.for_user(omar, Action.VIEW)) == {shared}
    assert set(Template.objects.for_user(ada, Action.VIEW)) == {shared, own}
    assert set(Template.objects.for_user(lin, Action.MANAGE)) == {own}
    assert set(Template.objects.for_user(root, Action.MANAGE)) == {shared, own}


@pytest.mark.django_db
def test_free_gpus_are_seen_by_everyone_and_held_ones_by_the_holding_team(
    ada: User, omar: User, team: Team, other_team: Team
) -> None:
    free = Gpu.objects.create(node="n1", index=0)
    ours = Gpu.objects.create(node="n1", index=1, allocated=True, team=team)
    theirs = Gpu.objects.create(node="n1", index=2, allocated=True, team=other_team)
    assert set(Gpu.objects.for_user(ada)) == {free, ours}
    assert set(Gpu.objects.for_user(omar)) == {free, theirs}
    # Shared rows are for reading: acting on a GPU goes through its team.
    assert set(Gpu.objects.for_user(ada, Action.LAUNCH)) == {ours}


@pytest.mark.django_db
@pytest.mark.parametrize("action", [Action.VIEW, Action.MANAGE])
def test_the_audit_log_shows_leads_their_teams_events_whatever_is_asked(
    action: Action, ada: User, lin: User, team: Team, other_team: Team
) -> None:
    ours = AuditEvent.objects.create(
        actor_label="x", verb="team.updated", target_type="t", target_id="1", team_id=team.pk
    )
    AuditEvent.objects.create(
        actor_label="x", verb="team.updated", target_type="t", target_id="2", team_id=other_team.pk
    )
    AuditEvent.objects.create(actor_label="x", verb="system.note", target_type="t", target_id="3")
    assert list(AuditEvent.objects.for_user(lin, action)) == [ours]
    assert list(AuditEvent.objects.for_user(ada, action)) == []


@pytest.mark.django_db
def test_idle_findings_follow_the_holding_team(ada: User, omar: User, team: Team) -> None:
    gpu = Gpu.objects.create(node="n1", index=0, allocated=True, team=team)
    finding = IdleFinding.objects.create(gpu=gpu, team=team, idle_since=timezone.now())
    outside = Gpu.objects.create(node="n1", index=1, allocated=True, namespace="outside")
    IdleFinding.objects.create(gpu=outside, namespace="outside", idle_since=timezone.now())
    assert list(IdleFinding.objects.for_user(ada)) == [finding]
    assert list(IdleFinding.objects.for_user(omar)) == []


@pytest.mark.django_db
def test_scoping_composes_with_other_filters_in_either_order(ada: User, project: Project) -> None:
    assert list(Project.objects.filter(slug="demo").for_user(ada)) == [project]
    assert list(Project.objects.for_user(ada).filter(slug="nope")) == []


@pytest.mark.django_db
def test_an_unknown_action_is_an_error_for_everyone(ada: User, root: User) -> None:
    for user in (ada, root, AnonymousUser()):
        with pytest.raises(ValueError):
            Project.objects.for_user(user, "delete")
