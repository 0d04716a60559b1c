"""People: users, teams, team memberships with a role, API tokens."""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.access.roles import Role

slug_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$",
    "Use 1-40 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


class User(AbstractUser):
    """A person (or a service account). `is_platform_admin` is the platform team's flag:
    it grants every action everywhere and the admin console."""

    is_platform_admin = models.BooleanField(default=False)
    # The identity-provider identity this account signs in as (OpenID Connect `iss` + `sub`,
    # which the provider promises never to reassign). Both empty: no SSO link. Usernames are
    # never used to match an SSO sign-in to an account (see apps.accounts.oidc).
    sso_issuer = models.CharField(max_length=255, blank=True, default="")
    sso_subject = models.CharField(max_length=255, blank=True, default="")
    # An IANA zone (e.g. "Europe/Paris") pages show times in; empty: the browser's zone
    # (apps.core.timezones), else the server's TIME_ZONE.
    time_zone = models.CharField(max_length=64, blank=True, default="")

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined]  # keeps verbose_name
        constraints = [
            models.UniqueConstraint(
                fields=["sso_issuer", "sso_subject"],
                condition=~models.Q(sso_subject=""),
                name="one_account_per_sso_identity",
            )
        ]

    @property
    def has_sso_link(self) -> bool:
        """Whether an identity-provider identity is linked to this account."""
        return bool(self.sso_subject)

    def team_roles(self) -> dict[int, str]:
        """team id -> role, loaded once per user object (a request's user lives one request)."""
        cached: dict[int, str] | None = getattr(self, "_plinth_team_roles", None)
        if cached is None:
            cached = dict(Membership.objects.filter(user=self).values_list("team_id", "role"))
            self._plinth_team_roles = cached
        return cached

    def forget_team_roles(self) -> None:
        self.__dict__.pop("_plinth_team_roles", None)


class Team(models.Model):
    """A group of people who own projects. `gpu_budget` is set by platform admins; the sum
    of the team's project quotas may not exceed it."""

    slug = models.SlugField(max_length=40, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    gpu_budget = models.PositiveIntegerField(default=0, validators=[MinValueValidator(0)])
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["Team"].as_manager()
    access_scope = TeamScope("")

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


DIRECT = "direct"
SSO_PREFIX = "sso:"


class Membership(models.Model):
    """One person's role in one team. `source` says where it comes from: `direct` (a lead
    or an admin added them) or `sso:<group>` (an identity-provider group mapped to this
    team; applied at each SSO login, removed when the group is gone)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    source = models.CharField(max_length=160, default=DIRECT)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["Membership"].as_manager()
    access_scope = TeamScope("team")

    class Meta:
        ordering = ["team__slug", "user__username"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} as {self.role}"

    @property
    def sso_group(self) -> str:
        """The identity-provider group this membership comes from ("" when direct)."""
        return self.source[len(SSO_PREFIX) :] if self.source.startswith(SSO_PREFIX) else ""


class SsoGroupMapping(models.Model):
    """An identity-provider group that grants a role in a team. Applied at every SSO login:
    members of `group` get `role` in `team` (the strongest role wins when several of a
    user's groups map to the same team; a direct membership is left alone)."""

    group = models.CharField(max_length=150)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="sso_mappings")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__slug", "group"]
        constraints = [models.UniqueConstraint(fields=["group", "team"], name="one_mapping_per_group_and_team")]

    def __str__(self) -> str:
        return f"{self.group} -> {self.team} as {self.role}"


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, user__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A named API token. Only its SHA-256 digest is stored; the key is shown once."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A name says where a token is used; two live tokens with one name can't be told
            # apart when one of them has to be revoked. Revoked tokens free their name.
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="one_live_token_name_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def as_audit(self) -> dict[str, Any]:
        return {"name": self.name, "prefix": self.prefix, "expires_at": self.expires_at}
