"""Reads for the console, scoped to the viewer: who has access to what, and the lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from apps.access import policies
from apps.access.roles import Action, Role
from apps.accounts.models import Membership, Team, User
from apps.launches.models import Template
from apps.projects.models import Project

# What each role lets a person do, in the words the pages use (apps/access/roles.py is the rule).
CAN_DO: dict[str, list[str]] = {
    Role.VIEWER: ["see the team's projects, launches, runs and models"],
    Role.MEMBER: [
        "see the team's projects, launches, runs and models",
        "launch jobs and sweeps, cancel their own",
        "request model promotions",
    ],
    Role.LEAD: [
        "everything a member can",
        "add and remove members, change roles",
        "create projects, set quotas within the team budget",
        "manage the team's templates",
        "approve promotions, cancel anyone's launches",
        "read the team's audit log",
    ],
    "admin": ["everything, in every team (platform admin)"],
}
CLUSTER_ROLE: dict[str, str] = {Role.VIEWER: "view", Role.MEMBER: "edit", Role.LEAD: "edit"}
MLFLOW_PERMISSION: dict[str, str] = {Role.VIEWER: "READ", Role.MEMBER: "EDIT", Role.LEAD: "EDIT"}


@dataclass
class Access:
    """One person's access to one team (and so to its projects)."""

    user: User
    team: Team
    role: str
    source: str  # "direct", "sso:<group>", or "platform admin"

    @property
    def via(self) -> str:
        if self.source.startswith("sso:"):
            return f"SSO group {self.source[4:]}"
        return "platform admin flag" if self.source == "platform admin" else "added directly"

    @property
    def can_do(self) -> list[str]:
        return CAN_DO.get(self.role, [])

    @property
    def cluster_role(self) -> str:
        return CLUSTER_ROLE.get(self.role, "all (cluster admin)")

    @property
    def mlflow_permission(self) -> str:
        return MLFLOW_PERMISSION.get(self.role, "MANAGE")


def team_access(team: Team) -> list[Access]:
    """Everyone with access to `team`: its members (role and where it comes from), then the
    platform admins, who may do everything everywhere."""
    rows = [
        Access(m.user, team, m.role, m.source)
        for m in team.memberships.select_related("user").order_by("user__username")
    ]
    admins = User.objects.filter(is_platform_admin=True, is_active=True).order_by("username")
    rows += [Access(admin, team, "admin", "platform admin") for admin in admins]
    return rows


def user_access(person: User, viewer: Any) -> list[Access]:
    """The teams `person` belongs to, as far as `viewer` may see them (a lead sees the
    teams they lead), each with the projects it gives access to (prefetched)."""
    visible = Team.objects.for_user(viewer, Action.MANAGE)
    memberships = (
        Membership.objects.filter(user=person, team__in=visible)
        .select_related("team")
        .prefetch_related("team__projects")
        .order_by("team__slug")
    )
    return [Access(person, m.team, m.role, m.source) for m in memberships]


def console_teams(viewer: Any) -> QuerySet[Team]:
    return (
        Team.objects.for_user(viewer, Action.MANAGE)
        .annotate(
            n_members=Count("memberships", distinct=True),
            n_projects=Count("projects", distinct=True),
        )
        .prefetch_related("projects")
        .order_by("slug")
    )


def console_users(viewer: Any, query: str = "") -> QuerySet[User]:
    """Platform admins: every account; leads: the people of the teams they lead."""
    users = User.objects.all()
    if not policies.is_platform_admin(viewer):
        led = Team.objects.for_user(viewer, Action.MANAGE)
        users = users.filter(memberships__team__in=led).distinct()
    if query:
        users = users.filter(Q(username__icontains=query) | Q(email__icontains=query) | Q(last_name__icontains=query))
    return users.annotate(
        n_teams=Count("memberships", distinct=True),
        n_tokens=Count("api_tokens", filter=Q(api_tokens__revoked_at__isnull=True), distinct=True),
    ).order_by("username")


def console_projects(viewer: Any) -> QuerySet[Project]:
    return (
        Project.objects.for_user(viewer, Action.MANAGE)
        .select_related("team")
        .prefetch_related("access_syncs")
        .order_by("team__slug", "slug")
    )


def console_templates(viewer: Any) -> QuerySet[Template]:
    """Global templates and those of the teams the viewer leads (platform admins: all)."""
    return (
        Template.objects.for_user(viewer, Action.VIEW)
        .filter(Q(team__isnull=True) | Q(team__in=Team.objects.for_user(viewer, Action.MANAGE)))
        .select_related("team", "environment__team")
        .order_by("team__slug", "slug")
    )
