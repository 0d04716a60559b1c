"""One lookup per object type, used by pages, the API and tasks alike: 404 when the
object does not exist or is invisible to the user, 403 when visible but not allowed."""

from __future__ import annotations

import re
from typing import Any, cast

from django.core.exceptions import PermissionDenied
from django.http import Http404

from apps.access.policies import can, is_platform_admin
from apps.access.roles import Action
from apps.accounts.models import Membership, Team, slug_validator
from apps.projects.models import Project


def _check(user: Any, action: Action | str, team: Any) -> None:
    if not can(user, Action.VIEW, team):
        raise Http404("Not found.")
    if not can(user, action, team):
        raise PermissionDenied("Your role in this team does not allow that.")


def _is_slug(value: Any) -> bool:
    """Whether `value` can be a team or project slug at all: anything else (a NUL, which
    PostgreSQL refuses in a query, or 10,000 characters) is a 404 without a query."""
    return isinstance(value, str) and cast("re.Pattern[str]", slug_validator.regex).fullmatch(value) is not None


def get_team_for_user(user: Any, slug: str, action: Action | str = Action.VIEW) -> Team:
    team = Team.objects.filter(slug=slug).first() if _is_slug(slug) else None
    if team is None:
        raise Http404("No such team.")
    _check(user, action, team)
    return team


def get_project_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Project:
    try:
        project = Project.objects.select_related("team").get(pk=int(pk))
    except (Project.DoesNotExist, ValueError, TypeError):
        raise Http404("No such project.") from None
    _check(user, action, project.team)
    return project


def get_project_by_slug_for_user(user: Any, team_slug: str, slug: str, action: Action | str = Action.VIEW) -> Project:
    found = Project.objects.select_related("team").filter(team__slug=team_slug, slug=slug)
    project = found.first() if _is_slug(team_slug) and _is_slug(slug) else None
    if project is None:
        raise Http404("No such project.")
    _check(user, action, project.team)
    return project


def get_membership_for_user(user: Any, team: Team, username: str, action: Action | str = Action.VIEW) -> Membership:
    _check(user, action, team)
    membership = Membership.objects.select_related("user", "team").filter(team=team, user__username=username).first()
    if membership is None:
        raise Http404("No such member.")
    return membership


def get_launch_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Any:
    from apps.launches.models import Launch

    try:
        launch = Launch.objects.select_related("project__team", "template", "created_by", "sweep").get(pk=int(pk))
    except (Launch.DoesNotExist, ValueError, TypeError):
        raise Http404("No such launch.") from None
    _check(user, action, launch.project.team)
    return launch


def get_sweep_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Any:
    from apps.launches.models import Sweep

    try:
        sweep = Sweep.objects.select_related("project__team", "template", "created_by").get(pk=int(pk))
    except (Sweep.DoesNotExist, ValueError, TypeError):
        raise Http404("No such sweep.") from None
    _check(user, action, sweep.project.team)
    return sweep


def get_template_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Any:
    """Global templates are visible to everyone signed in and managed by platform admins;
    team templates follow the team's roles."""
    from apps.launches.models import Template

    try:
        template = Template.objects.select_related("team").get(pk=int(pk))
    except (Template.DoesNotExist, ValueError, TypeError):
        raise Http404("No such template.") from None
    if template.team is None:
        if not getattr(user, "is_authenticated", False):
            raise Http404("No such template.")
        if action != Action.VIEW and not is_platform_admin(user):
            raise PermissionDenied("Global templates are managed by platform admins.")
        return template
    _check(user, action, template.team)
    return template


def get_user_for_user(actor: Any, username: str, action: Action | str = Action.VIEW) -> Any:
    """A person, for the console: platform admins see everyone; a lead sees the people of
    the teams they lead (and themselves); anyone else is a 404. Changing an account
    (anything beyond VIEW) needs a platform admin (403)."""
    from apps.accounts.models import User

    person = User.objects.filter(username=username).first()
    if person is None:
        raise Http404("No such user.")
    if is_platform_admin(actor):
        return person
    led = Membership.objects.filter(user=actor, role="lead").values("team_id")
    visible = (
        person.pk == getattr(actor, "pk", None) or Membership.objects.filter(user=person, team_id__in=led).exists()
    )
    if not visible:
        raise Http404("No such user.")
    if action != Action.VIEW:
        raise PermissionDenied("Only platform admins change accounts.")
    return person


def get_sso_mapping_for_user(user: Any, team: Team, pk: Any, action: Action | str = Action.ADMIN) -> Any:
    """An SSO group mapping of `team` (the team was looked up for `user` already)."""
    from apps.accounts.models import SsoGroupMapping

    _check(user, action, team)
    try:
        return SsoGroupMapping.objects.select_related("team").get(pk=int(pk), team=team)
    except (SsoGroupMapping.DoesNotExist, ValueError, TypeError):
        raise Http404("No such mapping.") from None
