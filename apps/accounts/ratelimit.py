"""Rate limits on the ways in (the login page and the token endpoint), per client IP and
per username, kept in Django's cache (LocMem on a laptop, Redis in production, so the
count holds across web replicas).

What is counted: failed attempts. A correct password is never slowed down by someone
else guessing from another address, but a guesser is stopped after a few tries per
account (`PLINTH_LOGIN_FAILURES_PER_USER`) and per address (`PLINTH_LOGIN_FAILURES_PER_IP`,
higher: many people can share one NAT). While locked, even the right password gets the
lockout answer, so guessing cannot continue in the dark."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


@dataclass(frozen=True)
class Lockout:
    scope: str  # "ip" or "user"
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.retry_after / 60))
        who = "this account" if self.scope == "user" else "your address"
        return f"Too many failed sign-in attempts for {who}. Try again in {minutes} minute{'s' if minutes > 1 else ''}."


def _key(scope: str, value: str) -> str:
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
    return f"plinth:auth-failures:{scope}:{digest}"


def _limits() -> dict[str, int]:
    return {"ip": settings.PLINTH_LOGIN_FAILURES_PER_IP, "user": settings.PLINTH_LOGIN_FAILURES_PER_USER}


def _keys(ip: str | None, username: str) -> dict[str, str]:
    keys = {}
    if ip:
        keys["ip"] = _key("ip", ip)
    if username:
        keys["user"] = _key("user", username)
    return keys


def check(ip: str | None, username: str) -> Lockout | None:
    """The lockout in force for this address or account, if any."""
    window = settings.PLINTH_LOGIN_WINDOW_SECONDS
    limits = _limits()
    now = time.time()
    for scope, key in _keys(ip, username).items():
        count = cache.get(key) or 0
        if count >= limits[scope]:
            retry = int(float(cache.get(f"{key}:since") or now) + window - now)
            return Lockout(scope, max(retry, 1))
    return None


def record_failure(ip: str | None, username: str) -> None:
    """Count one failed attempt against the address and the account: a fixed window from
    the first failure. `add` + `incr` are atomic on Redis, so replicas share one count."""
    window = settings.PLINTH_LOGIN_WINDOW_SECONDS
    for key in _keys(ip, username).values():
        cache.add(f"{key}:since", time.time(), timeout=window)
        cache.add(key, 0, timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)


def reset(ip: str | None, username: str) -> None:
    """A successful sign-in clears the account's count (not the address's)."""
    if username:
        key = _key("user", username)
        cache.delete_many([key, f"{key}:since"])
