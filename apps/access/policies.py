"""Named rules. Every page, API view and task asks these; none re-implements them."""

from __future__ import annotations

from typing import Any

# The two base rules live with the scoped queryset (which the models import) and are
# re-exported here, so callers ask `policies.is_platform_admin` like every other rule.
from apps.access.querysets import is_platform_admin as is_platform_admin
from apps.access.querysets import is_signed_in as is_signed_in
from apps.access.roles import RANK, Action, Role, role_allows
from apps.accounts.models import Team, User


def team_role(user: Any, team: Any) -> str | None:
    """The user's role in `team`, or None when they are not a member."""
    if not is_signed_in(user):
        return None
    return user.team_roles().get(team.pk)


def can(user: Any, action: Action | str, team: Any) -> bool:
    """May `user` do `action` in `team`? Platform admins may do everything; otherwise the
    user's team role must be at least the action's minimum role. ADMIN needs the flag."""
    if is_platform_admin(user):
        return True
    return role_allows(team_role(user, team), action)


def can_see(user: Any, team: Any) -> bool:
    return can(user, Action.VIEW, team)


def can_manage_team(user: Any, team: Any) -> bool:
    """Leads of the team and platform admins manage members, roles, projects and quotas."""
    return can(user, Action.MANAGE, team)


def can_manage_run(user: Any, run: Any) -> bool:
    """Cancelling or extending a launch or a sweep (`run`: anything with `created_by_id` and
    `project.team`): the user who started it, a lead of its project's team, a platform
    admin. Its creator keeps the right once deactivated (a failing sweep cancels its trials
    in its creator's name); a lead or an admin loses it with their account, and an anonymous
    user has none. Whether the run may still be cancelled or extended is its state's
    question (409), not this rule's; extending also needs the LAUNCH right in the team."""
    if run.created_by_id is not None and run.created_by_id == getattr(user, "pk", None):
        return True
    return can_manage_team(user, run.project.team)


def can_create_team(user: Any) -> bool:
    """Only platform admins create teams and set their GPU budgets."""
    return is_platform_admin(user)


def can_set_role(actor: Any, team: Any, target_user: Any, new_role: str) -> bool:
    """A lead (or platform admin) sets roles, except that nobody raises their own role:
    a user may only keep or lower theirs. Platform admins are exempt (they already have
    every right)."""
    if not can_manage_team(actor, team):
        return False
    if is_platform_admin(actor):
        return True
    if actor.pk == target_user.pk:
        current = team_role(actor, team)
        return current is not None and RANK[new_role] <= RANK[current]
    return True


def leads_a_team(user: Any) -> bool:
    """Whether `user` leads at least one team (platform admins: whether any team exists,
    as they may manage every one). One query; False for anonymous and deactivated users."""
    return Team.objects.for_user(user, Action.MANAGE).exists()


def can_view_audit(user: Any, team: Any | None = None) -> bool:
    """Platform admins see the whole audit log; leads see their teams' events."""
    if is_platform_admin(user):
        return True
    if team is None:
        return is_signed_in(user) and any(role == Role.LEAD for role in user.team_roles().values())
    return can_manage_team(user, team)


def can_view_system_status(user: Any) -> bool:
    return is_platform_admin(user)


def can_see_foreign_usage(user: Any) -> bool:
    """GPU usage of pods that are not Plinth's launches (known only by their namespace, so
    no team owns them) is for platform admins; a lead's usage report covers their teams'
    projects only."""
    return is_platform_admin(user)


def actor_of(request: Any) -> User:
    """The signed-in user of a request that passed the login check, typed as a User."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionError("actor_of() needs an authenticated request")
    return user


def can_use_console(user: Any) -> bool:
    """The admin console: platform admins see all of it; leads see the part about the
    teams they lead (their members, projects, quotas, templates, audit log)."""
    return can_view_audit(user)


def can_manage_users(user: Any) -> bool:
    """Creating, deactivating and reactivating accounts, revoking anyone's API tokens and
    mapping SSO groups: platform admins only (a lead manages roles, not accounts)."""
    return is_platform_admin(user)


def can_manage_environment(user: Any, env_or_team: Any) -> bool:
    """Defining, deprecating, retiring and rebuilding environments: platform admins for the
    platform-wide ones (`env_or_team` an environment without a team, or None), a team's
    leads (and platform admins) for that team's own (an environment of the team, or the
    team itself). Using one is not managed here: that is seeing it."""
    from apps.environments.models import Environment

    team = env_or_team.team if isinstance(env_or_team, Environment) else env_or_team
    if team is None:
        return is_platform_admin(user)
    return can_manage_team(user, team)


def can_define_environment(user: Any) -> bool:
    """Whether `user` may define an environment at all (the pages' "Define" entry and the
    form): platform admins (platform-wide or any team's) and leads of a team (their teams'
    own). Which team a definition may go to is `can_manage_environment`'s answer."""
    return is_platform_admin(user) or leads_a_team(user)


def can_set_default_environment(user: Any, env: Any = None) -> bool:
    """Choosing the platform default environment (what new projects, and projects without
    their own, run in): platform admins only, and only a platform-wide environment (`env`
    without a team). Without `env`, whether `user` may choose the default at all: the
    service refuses others with 403 and answers a team's environment with 409, a state of
    the environment rather than a right of the user."""
    return is_platform_admin(user) and (env is None or env.team_id is None)


def can_manage_templates(user: Any, team: Any | None) -> bool:
    """Creating and changing launch templates: a team's leads (and platform admins) for the
    team's own (`team` a Team), platform admins alone for the global ones (`team` None)."""
    return is_platform_admin(user) if team is None else can_manage_team(user, team)


def can_report_usage(user: Any) -> bool:
    """GPU usage reports (the page, its CSV and the API) are for team leads, about the
    teams they lead, and platform admins, about every team. Which team a report may be
    narrowed to is a lookup of the team with MANAGE (404 unseen, 403 not led)."""
    return is_platform_admin(user) or leads_a_team(user)


def can_attach_experiment(user: Any) -> bool:
    """Linking a project to an MLflow experiment that already exists (outside Plinth, or
    one a deleted experiment's project is re-linked to), on creation or afterwards: platform
    admins only, as it shows the project's members every run in it. A lead gets a new one."""
    return is_platform_admin(user)
