"""One lookup per object type, used by pages, the API and tasks alike: 404 when the
object does not exist or is invisible to the user, 403 when visible but not allowed."""

from __future__ import annotations

import re
from typing import Any, cast

from django.core.exceptions import PermissionDenied
from django.http import Http404

from apps.access.policies import can, is_platform_admin, is_signed_in
from apps.access.roles import Action
from apps.accounts.models import Membership, Team, slug_validator
from apps.projects.models import Project


def check_team_access(user: Any, action: Action | str, team: Any, what: str) -> None:
    """The check of every lookup of a team-owned object: a 404 worded as for a missing
    `what` when `user` may not see `team` (an invisible object and a missing one read the
    same), a 403 when they see it but their role does not allow `action`."""
    if not can(user, Action.VIEW, team):
        raise Http404(f"No such {what}.")
    if not can(user, action, team):
        raise PermissionDenied("Your role in this team does not allow that.")


def is_slug(value: Any) -> bool:
    """Whether `value` can be a team or project slug at all: anything else (a NUL, which
    PostgreSQL refuses in a query, or 10,000 characters) is a 404 without a query."""
    return isinstance(value, str) and cast("re.Pattern[str]", slug_validator.regex).fullmatch(value) is not None


def get_team_for_user(user: Any, slug: str, action: Action | str = Action.VIEW) -> Team:
    team = Team.objects.filter(slug=slug).first() if is_slug(slug) else None
    if team is None:
        raise Http404("No such team.")
    check_team_access(user, action, team, "team")
    return team


def get_project_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Project:
    try:
        project = Project.objects.select_related("team").get(pk=int(pk))
    except (Project.DoesNotExist, ValueError, TypeError):
        raise Http404("No such project.") from None
    check_team_access(user, action, project.team, "project")
    return project


def get_project_by_slug_for_user(user: Any, team_slug: str, slug: str, action: Action | str = Action.VIEW) -> Project:
    found = Project.objects.select_related("team").filter(team__slug=team_slug, slug=slug)
    project = found.first() if is_slug(team_slug) and is_slug(slug) else None
    if project is None:
        raise Http404("No such project.")
    check_team_access(user, action, project.team, "project")
    return project


def get_membership_for_user(user: Any, team: Team, username: str, action: Action | str = Action.VIEW) -> Membership:
    check_team_access(user, action, team, "team")
    membership = Membership.objects.select_related("user", "team").filter(team=team, user__username=username).first()
    if membership is None:
        raise Http404("No such member.")
    return membership


def get_launch_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Any:
    from apps.launches.models import Launch

    try:
        launch = Launch.objects.select_related(
            "project__team", "template", "created_by", "sweep", "environment__team"
        ).get(pk=int(pk))
    except (Launch.DoesNotExist, ValueError, TypeError):
        raise Http404("No such launch.") from None
    check_team_access(user, action, launch.project.team, "launch")
    return launch


def get_sweep_for_user(user: Any, pk: Any, action: Action | str = Action.VIEW) -> Any:
    from apps.launches.models import Sweep

    try:
        sweep = Sweep.objects.select_related("project__team", "template", "created_by").get(pk=int(pk))
    except (Sweep.DoesNotExist, ValueError, TypeError):
        raise Http404("No such sweep.") from None
    check_team_access(user, action, sweep.project.team, "sweep")
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
    check_team_access(user, action, template.team, "template")
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


def get_api_token_for_user(actor: Any, pk: Any, action: Action | str = Action.VIEW) -> Any:
    """An API token. VIEW and MANAGE (revoke) are about one's own tokens: anybody else's
    token is a 404, for platform admins too (the account page). ADMIN is the console's:
    platform admins reach anyone's token; for everyone else it is a 404 as well, since a
    token's existence is not theirs to know."""
    from apps.accounts.models import ApiToken

    found = ApiToken.objects.select_related("user")
    if not is_signed_in(actor) or (Action(action) == Action.ADMIN and not is_platform_admin(actor)):
        raise Http404("No such token.")
    if Action(action) != Action.ADMIN:
        found = found.filter(user=actor)
    try:
        token: ApiToken = found.get(pk=int(pk))
    except (ApiToken.DoesNotExist, ValueError, TypeError):
        raise Http404("No such token.") from None
    return token


def get_sso_mapping_for_user(user: Any, team: Team, pk: Any, action: Action | str = Action.ADMIN) -> Any:
    """An SSO group mapping of `team` (the team was looked up for `user` already)."""
    from apps.accounts.models import SsoGroupMapping

    check_team_access(user, action, team, "team")
    try:
        return SsoGroupMapping.objects.select_related("team").get(pk=int(pk), team=team)
    except (SsoGroupMapping.DoesNotExist, ValueError, TypeError):
        raise Http404("No such mapping.") from None
