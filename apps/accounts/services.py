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
from apps.accounts.models import (
    DIRECT,
    SSO_PREFIX,
    ApiToken,
    Membership,
    SsoGroupMapping,
    Team,
    User,
    hash_token,
    slug_validator,
)
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed

TOKEN_PREFIX = "plt_"


def _forget_roles(*users: User) -> None:
    """Drop cached team roles after a change, so the same request sees the new rights."""
    for user in users:
        user.forget_team_roles()


def _schedule_access_sync(*teams: Team | int) -> None:
    """After commit, push the teams' changed memberships to the cluster and to MLflow
    (only where a sync is configured: apps.console.scheduling decides)."""
    from apps.console.scheduling import schedule_team_sync

    for team in teams:
        schedule_team_sync(team if isinstance(team, int) else team.pk)


def _validate_role(role: object) -> str:
    if not is_valid_role(role):
        raise InvalidInput.field("role", f"Unknown role {role!r}; choose one of: viewer, member, lead.")
    return str(role)


def _locked_team(team: Team) -> Team:
    return Team.objects.select_for_update().get(pk=team.pk)


def _team_audit(team: Team) -> dict[str, Any]:
    return {"slug": team.slug, "name": team.name, "gpu_budget": team.gpu_budget}


@transaction.atomic(durable=True)
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
    record(actor, AuditVerb.TEAM_CREATED, team, team=team, after=_team_audit(team))
    if lead_user is not None:
        membership = Membership.objects.create(team=team, user=lead_user, role=Role.LEAD)
        record(actor, AuditVerb.TEAM_MEMBER_ADDED, membership, team=team, after={"user": lead, "role": Role.LEAD})
    return team


@transaction.atomic(durable=True)
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
    record(actor, AuditVerb.TEAM_UPDATED, team, team=team, before=before, after=_team_audit(team))
    return team


@transaction.atomic(durable=True)
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
    record(actor, AuditVerb.TEAM_MEMBER_ADDED, membership, team=team, after={"user": user.username, "role": role})
    _schedule_access_sync(team)
    return membership


def _leads_left(team: Team, excluding: Membership) -> int:
    return Membership.objects.filter(team=team, role=Role.LEAD).exclude(pk=excluding.pk).count()


@transaction.atomic(durable=True)
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
    record(actor, AuditVerb.TEAM_ROLE_CHANGED, membership, team=team, before={"role": previous}, after={"role": role})
    _schedule_access_sync(team)
    return membership


@transaction.atomic(durable=True)
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
        AuditVerb.TEAM_MEMBER_REMOVED,
        membership,
        team=team,
        before={"user": membership.user.username, "role": membership.role},
    )
    membership.delete()
    _forget_roles(membership.user, actor)
    _schedule_access_sync(team)


def _free_token_name(user: User, base: str) -> str:
    """`base`, or `base (2)`, `base (3)`… whichever `user` holds no live token called."""
    taken = set(ApiToken.objects.filter(user=user, revoked_at__isnull=True).values_list("name", flat=True))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base[:70]} ({n})"
    return name


@transaction.atomic(durable=True)
def create_api_token(
    actor: User, *, name: str, expires_at: datetime | None = None, number_if_taken: bool = False
) -> tuple[ApiToken, str]:
    """Create a token for `actor`. Returns the row and the key; only the key's SHA-256
    digest is stored, so the key is shown once and never again. `expires_at` (aware
    datetime, optional) must be in the future; the authentication class refuses the token
    after it. A user's live (unrevoked) tokens have distinct names: a taken name is an
    InvalidInput on `name`, unless `number_if_taken` (the password exchange's default name),
    which picks `name (2)`, `name (3)`…"""
    name = (name or "").strip()
    if not name:
        raise InvalidInput.field("name", "Give the token a name, e.g. the laptop or pipeline that uses it.")
    if len(name) > 80:
        raise InvalidInput.field("name", "Keep the name under 80 characters.")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput.field("expires_at", "The expiry must be in the future.")
    if number_if_taken:
        name = _free_token_name(actor, name)
    taken = f"You already have a token called {name!r}: choose another name, or revoke that token first."
    if ApiToken.objects.filter(user=actor, name=name, revoked_at__isnull=True).exists():
        raise InvalidInput.field("name", taken)
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=actor,
                name=name,
                prefix=key[: len(TOKEN_PREFIX) + 6],
                digest=hash_token(key),
                expires_at=expires_at,
            )
    except IntegrityError:  # the same name created at the same moment (constraint one_live_token_name_per_user)
        raise InvalidInput.field("name", taken) from None
    record(actor, AuditVerb.TOKEN_CREATED, token, after=token.as_audit())
    return token, key


@transaction.atomic(durable=True)
def revoke_api_token(actor: User, token: ApiToken) -> ApiToken:
    """Revoke a token: its owner or a platform admin. Revoking twice is a no-op."""
    if token.user_id != actor.pk and not policies.is_platform_admin(actor):
        raise NotAllowed("You can only revoke your own tokens.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record(actor, AuditVerb.TOKEN_REVOKED, token, before=token.as_audit())
    return token


# --- users: created and deactivated by platform admins --------------------------------------
def _user_audit(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "email": user.email,
        "is_active": user.is_active,
        "is_platform_admin": user.is_platform_admin,
    }


@transaction.atomic(durable=True)
def create_user(
    actor: User,
    *,
    username: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    password: str = "",
    is_platform_admin: bool = False,
) -> User:
    """Create (invite) a user: platform admins only. Without a password the account has an
    unusable one: the person signs in through SSO, or an admin sets one later."""
    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins create users.")
    username = (username or "").strip()
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise InvalidInput.field("username", exc.messages[0]) from None
    if not username or len(username) > 150:
        raise InvalidInput.field("username", "A username is 1-150 letters, digits and @.+-_ characters.")
    if User.objects.filter(username__iexact=username).exists():
        raise InvalidInput.field("username", f"A user called {username!r} already exists.")
    user = User(username=username, email=email.strip(), first_name=first_name, last_name=last_name)
    user.is_platform_admin = bool(is_platform_admin)
    if password:
        from django.contrib.auth.password_validation import validate_password

        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise InvalidInput.field("password", " ".join(exc.messages)) from None
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    record(actor, AuditVerb.USER_CREATED, user, after=_user_audit(user))
    return user


def _delete_sessions_of(user: User) -> int:
    """Delete every stored session that belongs to `user` (database-backed sessions)."""
    from django.contrib.auth import SESSION_KEY
    from django.contrib.sessions.models import Session

    doomed = [
        session.pk
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if str(session.get_decoded().get(SESSION_KEY)) == str(user.pk)
    ]
    Session.objects.filter(pk__in=doomed).delete()
    return len(doomed)


@transaction.atomic(durable=True)
def deactivate_user(actor: User, user: User) -> User:
    """Deactivate a user (platform admins; never oneself). It takes effect at once: their
    sessions are deleted, their API tokens are revoked (and `ApiToken.objects.usable()`
    refuses tokens of inactive users anyway), and Django's backends refuse inactive users
    on every request. Memberships stay, so reactivating restores their roles."""
    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins deactivate users.")
    if actor.pk == user.pk:
        raise Conflict("You cannot deactivate yourself; ask another platform admin.")
    user = User.objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        return user
    before = _user_audit(user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    sessions = _delete_sessions_of(user)
    now = timezone.now()
    tokens = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
    record(
        actor,
        AuditVerb.USER_DEACTIVATED,
        user,
        before=before,
        after={**_user_audit(user), "sessions_ended": sessions, "tokens_revoked": tokens},
    )
    _schedule_access_sync(*Membership.objects.filter(user=user).values_list("team_id", flat=True))
    return user


@transaction.atomic(durable=True)
def reactivate_user(actor: User, user: User) -> User:
    """Let a deactivated user sign in again (platform admins). Revoked tokens stay revoked."""
    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins reactivate users.")
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active:
        return user
    before = _user_audit(user)
    user.is_active = True
    user.save(update_fields=["is_active"])
    record(actor, AuditVerb.USER_REACTIVATED, user, before=before, after=_user_audit(user))
    _schedule_access_sync(*Membership.objects.filter(user=user).values_list("team_id", flat=True))
    return user


@transaction.atomic(durable=True)
def unlock_sign_in(actor: User, user: User) -> int:
    """Lift every sign-in lock on `user`'s account (platform admins): the per-address locks
    and the account's ceiling (apps.accounts.ratelimit.unlock). Returns how many attempts
    were counted against the account; audited as `user.sign_in_unlocked`."""
    from apps.accounts import ratelimit

    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins unlock sign-in.")
    counted = ratelimit.unlock(user.username)
    record(actor, AuditVerb.USER_SIGN_IN_UNLOCKED, user, after={"username": user.username, "attempts_counted": counted})
    return counted


# --- SSO: accounts keyed on the identity provider's issuer + subject ----------------------------
def _sso_audit(user: User) -> dict[str, Any]:
    return {"username": user.username, "issuer": user.sso_issuer, "subject": user.sso_subject}


def _clean_identity(issuer: str, subject: str) -> tuple[str, str]:
    issuer, subject = (issuer or "").strip(), (subject or "").strip()
    if not issuer or len(issuer) > 255:
        raise InvalidInput.field("issuer", "Give the identity provider's issuer URL (the `iss` claim).")
    if not subject or len(subject) > 255:
        raise InvalidInput.field("subject", "Give the person's subject at the identity provider (the `sub` claim).")
    return issuer, subject


@transaction.atomic
def create_sso_user(
    *, issuer: str, subject: str, username: str, email: str = "", first_name: str = "", last_name: str = ""
) -> User:
    """Sign up a person the identity provider vouched for (called by apps.accounts.oidc at a
    first SSO sign-in): a new account keyed on `issuer` + `subject`, without a password. The
    username is the provider's; if any account already has it (case-insensitively: a local
    account, a platform admin, another provider's user), this is a Conflict and nothing is
    created: an account is never taken over by a name, and a platform admin links an
    existing account explicitly (`link_sso_identity`). `email` is only passed when the
    provider marked it verified. Audited as `user.sso_signed_up` (actor: the new user)."""
    issuer, subject = _clean_identity(issuer, subject)
    username = (username or "").strip()[:150]
    try:
        User.username_validator(username)
    except ValidationError:
        raise InvalidInput.field(
            "username", f"The identity provider's username {username!r} is not usable here."
        ) from None
    if User.objects.filter(sso_issuer=issuer, sso_subject=subject).exists():
        raise Conflict("This identity provider account already has a Plinth account.")
    if not username or User.objects.filter(username__iexact=username).exists():
        raise Conflict(
            f"An account called {username!r} already exists in Plinth. Ask a platform admin to link it to your "
            "single sign-on identity."
        )
    user = User(
        username=username,
        email=email,
        first_name=first_name[:150],
        last_name=last_name[:150],
        sso_issuer=issuer,
        sso_subject=subject,
    )
    user.set_unusable_password()
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # the same person's first sign-in twice at once, or the name just taken
        raise Conflict("That account was created at the same moment; sign in again.") from None
    record(user, AuditVerb.USER_SSO_SIGNED_UP, user, after={**_sso_audit(user), "email": user.email})
    return user


@transaction.atomic(durable=True)
def link_sso_identity(actor: User | None, user: User, *, issuer: str, subject: str) -> User:
    """Link an existing account to an identity-provider identity (`issuer` + `subject`), so
    that SSO signs that person in as `user`. Platform admins only (`actor` None: an operator
    at the command line, `manage.py link_sso`). Refused (Conflict) for a platform admin's
    account (break-glass admins stay local; make an SSO account an admin instead), for an
    inactive account, and when the identity is already linked to another account. Audited
    as `user.sso_linked` with the previous link, if any."""
    if actor is not None and not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins link accounts to SSO identities.")
    issuer, subject = _clean_identity(issuer, subject)
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_platform_admin:
        raise Conflict(f"{user.username} is a platform admin: platform admin accounts are never linked to SSO.")
    if not user.is_active:
        raise Conflict(f"{user.username} is deactivated; reactivate the account first.")
    other = User.objects.filter(sso_issuer=issuer, sso_subject=subject).exclude(pk=user.pk).first()
    if other is not None:
        raise Conflict(f"That identity is already linked to {other.username}; unlink it there first.")
    if (user.sso_issuer, user.sso_subject) == (issuer, subject):
        return user
    before = _sso_audit(user)
    user.sso_issuer, user.sso_subject = issuer, subject
    user.save(update_fields=["sso_issuer", "sso_subject"])
    record(actor, AuditVerb.USER_SSO_LINKED, user, before=before, after=_sso_audit(user))
    return user


@transaction.atomic(durable=True)
def unlink_sso_identity(actor: User | None, user: User) -> User:
    """Remove `user`'s SSO link (platform admins, or an operator when `actor` is None): SSO
    no longer signs anyone in as this account. Audited as `user.sso_unlinked`."""
    if actor is not None and not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins unlink accounts from SSO identities.")
    user = User.objects.select_for_update().get(pk=user.pk)
    if not user.has_sso_link:
        return user
    before = _sso_audit(user)
    user.sso_issuer = user.sso_subject = ""
    user.save(update_fields=["sso_issuer", "sso_subject"])
    record(actor, AuditVerb.USER_SSO_UNLINKED, user, before=before, after=_sso_audit(user))
    return user


# --- SSO: identity-provider groups mapped to team roles ------------------------------------------
@transaction.atomic(durable=True)
def add_sso_mapping(actor: User, team: Team, *, group: str, role: str) -> SsoGroupMapping:
    """Map an identity-provider group to a role in `team` (platform admins). It applies at
    each member's next SSO login, and (as a Group subject) at once to the cluster."""
    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins map SSO groups to teams.")
    role = _validate_role(role)
    group = (group or "").strip()
    if not group or len(group) > 150:
        raise InvalidInput.field("group", "Name the identity provider's group (at most 150 characters).")
    if SsoGroupMapping.objects.filter(team=team, group=group).exists():
        raise InvalidInput.field("group", f"The group {group!r} is already mapped to {team.slug}.")
    mapping = SsoGroupMapping.objects.create(team=team, group=group, role=role)
    record(actor, AuditVerb.SSO_MAPPING_ADDED, mapping, team=team, after={"group": group, "role": role})
    _schedule_access_sync(team)
    return mapping


@transaction.atomic(durable=True)
def remove_sso_mapping(actor: User, mapping: SsoGroupMapping) -> None:
    """Remove a group mapping (platform admins). Memberships it granted go at each person's
    next SSO login."""
    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins map SSO groups to teams.")
    team = mapping.team
    record(
        actor, AuditVerb.SSO_MAPPING_REMOVED, mapping, team=team, before={"group": mapping.group, "role": mapping.role}
    )
    mapping.delete()
    _schedule_access_sync(team)


@transaction.atomic
def apply_sso_groups(user: User, groups: list[str]) -> list[Membership]:
    """Make `user`'s SSO-granted memberships match `groups` (the identity provider's claim
    at this login). For each team some of the groups map to, the strongest mapped role
    wins and the membership's source is `sso:<group>`; SSO memberships whose group is gone
    are removed. Direct memberships are never touched: an admin's decision outranks the
    identity provider's. Every change is an audit event by "system"."""
    wanted: dict[int, SsoGroupMapping] = {}
    for mapping in SsoGroupMapping.objects.filter(group__in=set(groups)).select_related("team").order_by("group"):
        best = wanted.get(mapping.team_id)
        if best is None or RANK[mapping.role] > RANK[best.role]:
            wanted[mapping.team_id] = mapping
    current = {m.team_id: m for m in Membership.objects.select_for_update().filter(user=user).select_related("team")}
    changed: set[int] = set()
    for team_id, mapping in wanted.items():
        source = f"{SSO_PREFIX}{mapping.group}"
        existing = current.get(team_id)
        if existing is None:
            created = Membership.objects.create(team=mapping.team, user=user, role=mapping.role, source=source)
            record(
                None,
                AuditVerb.TEAM_MEMBER_ADDED,
                created,
                team=mapping.team,
                after={"user": user.username, "role": mapping.role, "source": source},
            )
            changed.add(team_id)
        elif existing.source != DIRECT and (existing.role, existing.source) != (mapping.role, source):
            before = {"role": existing.role, "source": existing.source}
            existing.role, existing.source = mapping.role, source
            existing.save(update_fields=["role", "source"])
            record(
                None,
                AuditVerb.TEAM_ROLE_CHANGED,
                existing,
                team=existing.team,
                before=before,
                after={"role": mapping.role},
            )
            changed.add(team_id)
    for team_id, existing in current.items():
        if existing.source.startswith(SSO_PREFIX) and team_id not in wanted:
            record(
                None,
                AuditVerb.TEAM_MEMBER_REMOVED,
                existing,
                team=existing.team,
                before={"user": user.username, "role": existing.role, "source": existing.source},
            )
            existing.delete()
            changed.add(team_id)
    _forget_roles(user)
    if changed:
        _schedule_access_sync(*changed)
    return list(Membership.objects.filter(user=user).select_related("team"))
