"""Roles and actions: the vocabulary of every access decision.

Roles within a team, weakest first: viewer < member < lead. Platform admins (a flag on
the user) may do everything everywhere. An action names the weakest role allowed to do it.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    MEMBER = "member", "Member"
    LEAD = "lead", "Lead"


RANK: dict[str, int] = {Role.VIEWER: 1, Role.MEMBER: 2, Role.LEAD: 3}


class Action(StrEnum):
    VIEW = "view"  # read the team, its projects, runs, models
    LAUNCH = "launch"  # create launches and sweeps, request promotions
    MANAGE = "manage"  # members, roles, project settings and quotas, approvals
    ADMIN = "admin"  # platform-wide: teams, budgets, system status


MIN_ROLE: dict[Action, str | None] = {
    Action.VIEW: Role.VIEWER,
    Action.LAUNCH: Role.MEMBER,
    Action.MANAGE: Role.LEAD,
    Action.ADMIN: None,  # no team role is enough
}


def is_valid_role(value: object) -> bool:
    return isinstance(value, str) and value in RANK


def roles_at_least(role: str) -> list[str]:
    return [r for r, rank in RANK.items() if rank >= RANK[role]]


def roles_for(action: Action | str) -> list[str]:
    minimum = MIN_ROLE[Action(action)]
    return [] if minimum is None else roles_at_least(minimum)


def role_allows(role: str | None, action: Action | str) -> bool:
    return role is not None and role in roles_for(action)
