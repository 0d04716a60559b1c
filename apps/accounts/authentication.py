"""`Authorization: Token <key>` for the API, against hashed, revocable, expiring tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken, hash_token

# Don't write last_used_at on every call: once a minute is enough to answer "is it used?".
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str) -> tuple[Any, ApiToken]:
        """The token's user, or AuthenticationFailed (401) saying why: unknown, revoked,
        expired (with when), or its owner deactivated. Only the key's digest is looked up."""
        token = ApiToken.objects.select_related("user").filter(digest=hash_token(key)).first()
        now = timezone.now()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This token was revoked; create a new one on your account page.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed(
                f"This token expired at {token.expires_at.isoformat(timespec='seconds')}; "
                "create a new one on your account page."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's account is deactivated.")
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token.user, token
