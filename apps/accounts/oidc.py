"""OpenID Connect sign-in (mozilla-django-oidc), switched on by PLINTH_OIDC_* settings.

Who is who: the username is the identity provider's `preferred_username` claim
(PLINTH_OIDC_USERNAME_CLAIM), the same name the cluster sees in its RoleBinding subjects
and MLflow sees in its users. A local account with that username is the same person (the
embedded mode's accounts and break-glass admins keep their passwords). The groups claim
(PLINTH_OIDC_GROUPS_CLAIM) is applied at every login through SsoGroupMapping rows
(apps.accounts.services.apply_sso_groups). A deactivated user is refused by the callback
view (it checks `is_active`), whatever the identity provider says."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.accounts import services
from apps.accounts.models import User


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into nested objects (e.g. `realm_access.roles`)."""
    value: Any = claims
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class PlinthOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    def username_from(self, claims: dict[str, Any]) -> str:
        username = _claim(claims, settings.PLINTH_OIDC_USERNAME_CLAIM)
        if not isinstance(username, str) or not username.strip():
            raise SuspiciousOperation(f"The identity provider sent no {settings.PLINTH_OIDC_USERNAME_CLAIM!r} claim.")
        return username.strip()[:150]

    def groups_from(self, claims: dict[str, Any]) -> list[str]:
        groups = _claim(claims, settings.PLINTH_OIDC_GROUPS_CLAIM) or []
        if isinstance(groups, str):
            groups = [groups]
        return [str(g) for g in groups if isinstance(g, str | int)]

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(_claim(claims, settings.PLINTH_OIDC_USERNAME_CLAIM))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return User.objects.filter(username=self.username_from(claims))

    def create_user(self, claims: dict[str, Any]) -> User:
        user = User.objects.create_user(
            self.username_from(claims),
            email=str(claims.get("email") or ""),
            first_name=str(claims.get("given_name") or "")[:150],
            last_name=str(claims.get("family_name") or "")[:150],
        )
        user.set_unusable_password()
        user.save(update_fields=["password"])
        return self.update_user(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if user.is_active:
            services.apply_sso_groups(user, self.groups_from(claims))
        return user
