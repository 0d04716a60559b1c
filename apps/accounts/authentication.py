"""API tokens: `Authorization: Token <key>` for the API, and the one check of a token that
both the API and the inference gateway use (hashed, revocable, expiring tokens)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken, Membership, hash_token

# Don't write last_used_at on every call: once a minute is enough to answer "is it used?".
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRefused(Exception):
    """An API token that may not be used; the message says why, for the caller (a 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def verify_api_token(key: str, *, team_id: int | None = None) -> ApiToken:
    """The live API token whose secret is `key`, with its user, in one query (only the key's
    digest is looked up). With `team_id` the same query reads the user's role in that team,
    as `token.team_role` (a role name, or None without a membership). Writes last_used_at at
    most once per LAST_USED_RESOLUTION.

    Raises TokenRefused saying why: unknown, revoked, expired (with when), or its owner
    deactivated."""
    tokens = ApiToken.objects.select_related("user").filter(digest=hash_token(key))
    if team_id is not None:
        role = Membership.objects.filter(user_id=OuterRef("user_id"), team_id=team_id).values("role")[:1]
        tokens = tokens.annotate(team_role=Subquery(role))
    token = tokens.first()
    now = timezone.now()
    if token is None:
        raise TokenRefused("Invalid token.")
    if token.revoked_at is not None:
        raise TokenRefused("This token was revoked; create a new one on your account page.")
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenRefused(
            f"This token expired at {token.expires_at.isoformat(timespec='seconds')}; "
            "create a new one on your account page."
        )
    if not token.user.is_active:
        raise TokenRefused("This token's account is deactivated.")
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str) -> tuple[Any, ApiToken]:
        """The token's user, or AuthenticationFailed (401) saying why (see verify_api_token)."""
        try:
            token = verify_api_token(key)
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(exc.message) from exc
        return token.user, token
