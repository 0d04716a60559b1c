"""Named rules of promotions. Services, pages, the API and the inbox ask these; none
re-implements them. Each rule has a test per clause in tests/registry/test_policy.py."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.access.policies import can, is_platform_admin, is_signed_in, team_role
from apps.access.roles import Action, Role
from apps.accounts.models import Membership, User
from apps.projects.models import Project
from apps.registry.models import PromotionPolicy, PromotionRequest, Status


def policy_for(project: Project) -> PromotionPolicy:
    """The project's policy, or an unsaved one holding the defaults when none was edited."""
    found = PromotionPolicy.objects.filter(project=project).prefetch_related("approvers").first()
    return found if found is not None else PromotionPolicy(project=project)


def can_request_promotion(user: Any, project: Project) -> bool:
    """Members and leads of the owning team (and platform admins) ask for promotions and
    rollbacks; viewers only watch."""
    return can(user, Action.LAUNCH, project.team)


# Who decides a project's requests. The policy may name approvers, each of whom must hold
# one of NAMED_APPROVER_ROLES in the team; with none named, the team's DEFAULT_APPROVER_ROLES
# (its leads) decide. Platform admins may always decide. Every question about approvers
# (may this person decide, whose inbox, who is mailed, who may be named, how big a quorum
# can be) is answered from these two and the functions below.
NAMED_APPROVER_ROLES: tuple[str, ...] = (Role.MEMBER, Role.LEAD)
DEFAULT_APPROVER_ROLES: tuple[str, ...] = (Role.LEAD,)


def approver_roles(named: list[int]) -> tuple[str, ...]:
    """The team roles that let a person decide, given the policy's named approvers."""
    return NAMED_APPROVER_ROLES if named else DEFAULT_APPROVER_ROLES


def approver_candidates(project: Project) -> QuerySet[User]:
    """The people a policy may name as approvers of `project`: active members and leads of
    its team."""
    return User.objects.filter(
        is_active=True, memberships__team=project.team, memberships__role__in=NAMED_APPROVER_ROLES
    ).distinct()


def eligible_approvers(project: Project, named: list[int] | None = None) -> QuerySet[User]:
    """The people of the team who may decide `project`'s requests: the named approvers
    (`named`, by default the saved policy's) who are still active members or leads, or,
    with none named, the team's active leads. Platform admins may decide too but are not
    listed: they are not mailed about every team's requests."""
    named = policy_for(project).approver_ids() if named is None else named
    people = User.objects.filter(
        is_active=True, memberships__team=project.team, memberships__role__in=approver_roles(named)
    )
    if named:
        people = people.filter(pk__in=named)
    return people.distinct()


def is_eligible_approver(user: Any, project: Project, policy: PromotionPolicy | None = None) -> bool:
    """Who may decide a project's requests: the approvers the policy names (each still a
    member or lead of the team), or by default the team's leads. Platform admins may always
    decide. Eligibility alone is not enough to approve a given request: see can_approve.
    (eligible_approvers is the same rule as a query.)"""
    if is_platform_admin(user):
        return True
    role = team_role(user, project.team)
    if role is None:
        return False
    named = (policy or policy_for(project)).approver_ids()
    return role in approver_roles(named) and (not named or user.pk in named)


def can_approve(user: Any, request: PromotionRequest, policy: PromotionPolicy | None = None) -> bool:
    """An eligible approver may approve, except the person who made the request: nobody
    approves their own request, platform admins included; this is not configurable."""
    if not getattr(user, "is_authenticated", False) or user.pk == request.requested_by_id:
        return False
    return is_eligible_approver(user, request.project, policy)


def can_reject(user: Any, request: PromotionRequest, policy: PromotionPolicy | None = None) -> bool:
    """The same people who may approve may reject; one rejection rejects. The requester
    withdraws instead."""
    return can_approve(user, request, policy)


def can_withdraw(user: Any, request: PromotionRequest) -> bool:
    """The requester withdraws their own request; the team's leads and platform admins may
    withdraw anyone's (to clear a stale one)."""
    if not getattr(user, "is_authenticated", False):
        return False
    return user.pk == request.requested_by_id or can(user, Action.MANAGE, request.project.team)


def can_edit_policy(user: Any, project: Project) -> bool:
    """The team's leads and platform admins edit a project's promotion policy (audited)."""
    return can(user, Action.MANAGE, project.team)


def can_attach_model(user: Any, project: Project) -> bool:
    """The team's leads and platform admins attach a model registered outside Plinth."""
    return can(user, Action.MANAGE, project.team)


def can_emergency_rollback(user: Any, project: Project) -> bool:
    """A lead of the team (or a platform admin) may roll an alias back at once, skipping
    the quorum — not the record: the request, its audit event and the history row are
    written as for any other move."""
    return can(user, Action.MANAGE, project.team)


def awaiting_decision(user: Any) -> QuerySet[PromotionRequest]:
    """The pending, unexpired requests `user` may decide, other than their own: the
    inbox. The same rule as is_eligible_approver, as one query."""
    if not is_signed_in(user):
        return PromotionRequest.objects.none()
    pending = PromotionRequest.objects.filter(status=Status.PENDING, expires_at__gt=timezone.now()).exclude(
        requested_by=user
    )
    if is_platform_admin(user):
        return pending
    with_named = PromotionPolicy.objects.filter(approvers__isnull=False).values("project_id")
    named_me = PromotionPolicy.objects.filter(approvers=user).values("project_id")
    by_default = Membership.objects.filter(user=user, role__in=DEFAULT_APPROVER_ROLES).values("team_id")
    as_named = Membership.objects.filter(user=user, role__in=NAMED_APPROVER_ROLES).values("team_id")
    return pending.filter(
        (Q(project__team_id__in=by_default) & ~Q(project_id__in=with_named))
        | (Q(project_id__in=named_me) & Q(project__team_id__in=as_named))
    )


def pending_count(user: Any) -> int:
    """How many requests wait for `user`'s decision (the navigation's badge): one query."""
    return awaiting_decision(user).count()
