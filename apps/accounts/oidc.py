"""OpenID Connect sign-in (mozilla-django-oidc), switched on by PLINTH_OIDC_* settings.

Who is who: an SSO account is keyed on the ID token's issuer and subject (`iss` + `sub`,
which OpenID Connect Core 1.0 §2 makes a stable, never-reassigned identifier), stored on
the user (`sso_issuer`, `sso_subject`). Names and emails are never used to find an account:
a person who renames themselves at the identity provider still signs in as themselves, and
an identity-provider user called `root` does not become Plinth's `root`.

A first sign-in creates a new account named after the username claim
(PLINTH_OIDC_USERNAME_CLAIM, `preferred_username` by default: the name the cluster sees in
RoleBinding subjects and MLflow in its users). If an account with that name already exists
(a local account, a platform admin, another provider's user), the sign-in is refused with a
message and an audit event (`user.sso_refused`); nothing is merged. A platform admin links an
existing account to an identity explicitly (`manage.py link_sso`). Refusing rather than
creating `name-2` keeps one name per person across Plinth, the cluster and MLflow.

The email is copied only when the provider says it is verified (`email_verified`). The
groups claim (PLINTH_OIDC_GROUPS_CLAIM) is applied at every sign-in through SsoGroupMapping
rows (apps.accounts.services.apply_sso_groups). A deactivated user is refused by the callback
view (it checks `is_active`), whatever the identity provider says."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.accounts import services
from apps.accounts.models import User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import ServiceError

logger = logging.getLogger(__name__)


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into nested objects (e.g. `realm_access.roles`)."""
    value: Any = claims
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _verified(value: Any) -> bool:
    """The `email_verified` claim is a boolean; some providers send the string "true"."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


class PlinthOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """mozilla-django-oidc's backend, matching users on `iss` + `sub` (see the module)."""

    def username_from(self, claims: dict[str, Any]) -> str:
        """The username claim, trimmed to Django's 150 characters; SuspiciousOperation if absent."""
        username = _claim(claims, settings.PLINTH_OIDC_USERNAME_CLAIM)
        if not isinstance(username, str) or not username.strip():
            raise SuspiciousOperation(f"The identity provider sent no {settings.PLINTH_OIDC_USERNAME_CLAIM!r} claim.")
        return username.strip()[:150]

    def groups_from(self, claims: dict[str, Any]) -> list[str]:
        """The groups claim as a list of strings (a single string counts as one group)."""
        groups = _claim(claims, settings.PLINTH_OIDC_GROUPS_CLAIM) or []
        if isinstance(groups, str):
            groups = [groups]
        return [str(g) for g in groups if isinstance(g, str | int)]

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The userinfo claims, with `iss` and `sub` taken from the verified ID token
        (`payload`). The userinfo `sub` must equal the ID token's (OpenID Connect Core 1.0
        §5.3.2: otherwise the answer must not be used): SuspiciousOperation if not."""
        claims = dict(super().get_userinfo(access_token, id_token, payload))
        issuer, subject = payload.get("iss"), payload.get("sub")
        if not isinstance(issuer, str) or not issuer or not isinstance(subject, str) or not subject:
            raise SuspiciousOperation("The ID token has no issuer or subject.")
        if claims.get("sub") != subject:
            raise SuspiciousOperation("The userinfo subject differs from the ID token's.")
        claims["iss"], claims["sub"] = issuer, subject
        return claims

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        """A sign-in needs an issuer, a subject and a username claim."""
        return bool(claims.get("iss") and claims.get("sub") and _claim(claims, settings.PLINTH_OIDC_USERNAME_CLAIM))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        """The account linked to this issuer + subject (at most one: a unique constraint)."""
        return User.objects.filter(sso_issuer=claims["iss"], sso_subject=claims["sub"])

    def create_user(self, claims: dict[str, Any]) -> User | None:
        """Sign up a new SSO account (apps.accounts.services.create_sso_user), or refuse the
        sign-in (None, with a message) when the username belongs to an existing account."""
        try:
            user = services.create_sso_user(
                issuer=claims["iss"],
                subject=claims["sub"],
                username=self.username_from(claims),
                email=str(claims.get("email") or "")[:254] if _verified(claims.get("email_verified")) else "",
                first_name=str(claims.get("given_name") or ""),
                last_name=str(claims.get("family_name") or ""),
            )
        except ServiceError as exc:
            self._refuse(claims, exc.message)
            return None
        return self.update_user(user, claims)

    def _refuse(self, claims: dict[str, Any], reason: str) -> None:
        """Tell the person why, log one line, and audit the refusal against the account whose
        name was asked for (if there is one): a takeover attempt is worth seeing."""
        username = str(_claim(claims, settings.PLINTH_OIDC_USERNAME_CLAIM) or "")[:150]
        logger.warning("SSO sign-in refused for %s (sub %s): %s", claims.get("iss"), claims.get("sub"), reason)
        if getattr(self, "request", None) is not None:
            messages.error(self.request, reason)
        existing = User.objects.filter(username__iexact=username).first() if username else None
        if existing is not None:
            record(
                None,
                AuditVerb.USER_SSO_REFUSED,
                existing,
                after={"issuer": claims.get("iss"), "subject": claims.get("sub"), "username": username},
            )

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        """At every sign-in: apply the identity provider's groups (active users only). The
        username is not changed when the provider's changes: it names the person in the
        cluster and MLflow, and the account is found by `iss` + `sub` anyway."""
        if user.is_active:
            services.apply_sso_groups(user, self.groups_from(claims))
        return user
