"""Every change to teams, memberships and API tokens. Each function checks the actor's
rights through apps.access, runs in one transaction and writes an audit event."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.access import policies
from apps.access.roles import RANK, Role, is_valid_role
from apps.accounts.models import ApiToken, Membership, Team, User, hash_token, slug_validator
from apps.audit.services import record
from apps.core.errors import Conflict, InvalidInput, NotAllowed

TOKEN_PREFIX = "plt_"


def _forget_roles(*users: User) -> None:
    """Drop cached team roles after a change, so the same request sees the new rights."""
    for user in users:
        user.forget_team_roles()


def _validate_role(role: object) -> str:
    if not is_valid_role(role):
        raise InvalidInput.field("role", f"Unknown role {role!r}; choose one of: viewer, member, lead.")
    return str(role)


def _locked_team(team: Team) -> Team:
    return Team.objects.select_for_update().get(pk=team.pk)


def _team_audit(team: Team) -> dict[str, Any]:
    return {"slug": team.slug, "name": team.name, "gpu_budget": team.gpu_budget}


@transaction.atomic
def create_team(
    actor: User, *, slug: str, name: str, description: str = "", gpu_budget: int = 0, lead: str = ""
) -> Team:
    """Create a team (platform admins only), optionally with its first lead (a username)."""
    if not policies.can_create_team(actor):
        raise NotAllowed("Only platform admins create teams.")
    lead_user = None
    if lead:
        lead_user = User.objects.filter(username=lead, is_active=True).first()
        if lead_user is None:
            raise InvalidInput.field("lead", f"There is no active user called {lead!r}.")
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise InvalidInput.field("slug", exc.messages[0]) from None
    if not name.strip():
        raise InvalidInput.field("name", "A team needs a name.")
    if gpu_budget < 0:
        raise InvalidInput.field("gpu_budget", "The GPU budget cannot be negative.")
    if Team.objects.filter(slug=slug).exists():
        raise InvalidInput.field("slug", f"A team with the slug {slug!r} already exists.")
    try:
        with transaction.atomic():
            team = Team.objects.create(slug=slug, name=name.strip(), description=description, gpu_budget=gpu_budget)
    except IntegrityError:
        raise InvalidInput.field("slug", f"A team with the slug {slug!r} already exists.") from None
    record(actor, "team.created", team, team=team, after=_team_audit(team))
    if lead_user is not None:
        membership = Membership.objects.create(team=team, user=lead_user, role=Role.LEAD)
        record(actor, "team.member_added", membership, team=team, after={"user": lead, "role": Role.LEAD})
    return team


@transaction.atomic
def update_team(
    actor: User, team: Team, *, name: str | None = None, description: str | None = None, gpu_budget: int | None = None
) -> Team:
    """Rename a team (leads, admins) or change its GPU budget (platform admins only; never
    below what its projects' quotas already add up to)."""
    team = _locked_team(team)
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins change a team.")
    before = _team_audit(team)
    if name is not None:
        if not name.strip():
            raise InvalidInput.field("name", "A team needs a name.")
        team.name = name.strip()
    if description is not None:
        team.description = description
    if gpu_budget is not None and gpu_budget != team.gpu_budget:
        if not policies.is_platform_admin(actor):
            raise NotAllowed("Only platform admins change a team's GPU budget.")
        if gpu_budget < 0:
            raise InvalidInput.field("gpu_budget", "The GPU budget cannot be negative.")
        allocated = sum(team.projects.values_list("gpu_quota", flat=True))
        if gpu_budget < allocated:
            raise Conflict(f"The team's projects already hold {allocated} GPUs of quota; lower them first.")
        team.gpu_budget = gpu_budget
    team.save()
    record(actor, "team.updated", team, team=team, before=before, after=_team_audit(team))
    return team


@transaction.atomic
def add_member(actor: User, team: Team, *, username: str, role: str) -> Membership:
    """Add an existing user to a team with a role (leads of the team, platform admins)."""
    role = _validate_role(role)
    team = _locked_team(team)
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins add members.")
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise InvalidInput.field("username", f"There is no active user called {username!r}.")
    if Membership.objects.filter(team=team, user=user).exists():
        raise InvalidInput.field("username", f"{username} is already a member of {team.slug}.")
    membership = Membership.objects.create(team=team, user=user, role=role)
    _forget_roles(user, actor)
    record(actor, "team.member_added", membership, team=team, after={"user": user.username, "role": role})
    return membership


def _leads_left(team: Team, excluding: Membership) -> int:
    return Membership.objects.filter(team=team, role=Role.LEAD).exclude(pk=excluding.pk).count()


@transaction.atomic
def set_member_role(actor: User, membership: Membership, role: str) -> Membership:
    """Change a member's role. Nobody raises their own role; a team always keeps a lead."""
    role = _validate_role(role)
    team = _locked_team(membership.team)
    membership = Membership.objects.select_related("user").get(pk=membership.pk)
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only the team's leads and platform admins change roles.")
    if not policies.can_set_role(actor, team, membership.user, role):
        raise NotAllowed("You cannot raise your own role.")
    previous = membership.role
    if previous == role:
        return membership
    if previous == Role.LEAD and RANK[role] < RANK[Role.LEAD] and _leads_left(team, membership) == 0:
        raise Conflict(f"{membership.user.username} is the last lead of {team.slug}; name another lead first.")
    membership.role = role
    membership.save(update_fields=["role"])
    _forget_roles(membership.user, actor)
    record(actor, "team.role_changed", membership, team=team, before={"role": previous}, after={"role": role})
    return membership


@transaction.atomic
def remove_member(actor: User, membership: Membership) -> None:
    """Remove someone from a team (leads, admins; anyone may leave). Never the last lead."""
    team = _locked_team(membership.team)
    membership = Membership.objects.select_related("user").get(pk=membership.pk)
    leaving_self = actor.pk == membership.user_id
    if not (leaving_self or policies.can_manage_team(actor, team)):
        raise NotAllowed("Only the team's leads and platform admins remove members.")
    if membership.role == Role.LEAD and _leads_left(team, membership) == 0:
        raise Conflict(f"{membership.user.username} is the last lead of {team.slug}; name another lead first.")
    record(
        actor,
        "team.member_removed",
        membership,
        team=team,
        before={"user": membership.user.username, "role": membership.role},
    )
    membership.delete()
    _forget_roles(membership.user, actor)


@transaction.atomic
def create_api_token(actor: User, *, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Create a token for `actor`. Returns the row and the key; the key is never stored."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput.field("name", "Give the token a name, e.g. the laptop or pipeline that uses it.")
    if len(name) > 80:
        raise InvalidInput.field("name", "Keep the name under 80 characters.")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput.field("expires_at", "The expiry must be in the future.")
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=actor, name=name, prefix=key[: len(TOKEN_PREFIX) + 6], digest=hash_token(key), expires_at=expires_at
    )
    record(actor, "token.created", token, after=token.as_audit())
    return token, key


@transaction.atomic
def revoke_api_token(actor: User, token: ApiToken) -> ApiToken:
    """Revoke a token: its owner or a platform admin. Revoking twice is a no-op."""
    if token.user_id != actor.pk and not policies.is_platform_admin(actor):
        raise NotAllowed("You can only revoke your own tokens.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record(actor, "token.revoked", token, before=token.as_audit())
    return token
