"""Rate limits on the ways in (the login page and the token endpoint), kept in Django's
cache (LocMem on a laptop, Redis in production, so the count holds across web replicas).

Three counters, each a fixed window (`PLINTH_LOGIN_WINDOW_SECONDS`) from its first attempt:

- per account *and* address (`PLINTH_LOGIN_FAILURES_PER_USER`, default 10): a guesser is
  stopped after a few tries at one account; the lock holds even for the right password from
  that address, so guessing cannot continue in the dark;
- per address (`PLINTH_LOGIN_FAILURES_PER_IP`, higher: many people share one NAT);
- per account from everywhere (`PLINTH_LOGIN_ACCOUNT_CEILING`, much higher): a ceiling
  against guessing spread over many addresses. Because the first lock is per address, nobody
  can lock a person (a platform admin included) out by failing from their own machine.

The order is what makes it hold under concurrency: an attempt is counted *before* the
password is checked (`begin`), with the cache's atomic `add` + `incr`, and one whose count
passes a limit is refused without reaching the password check. Twenty simultaneous guesses
against a limit of ten: ten are checked, ten are refused. A successful sign-in gives its
attempt back (`succeeded`). `add` and `incr` are atomic on Redis and on LocMem (the two
backends portal/settings.py configures); Django's database and file caches implement `incr`
as a read and a write, so do not point the default cache at them.

A platform admin can lift every lock on an account at once (`unlock`, through
apps.accounts.services.unlock_sign_in): the account's counters live under a generation
number that unlocking advances, so even the per-address counters, whose addresses nobody
listed, are forgotten."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone


@dataclass(frozen=True)
class Lockout:
    """An attempt refused before its password was checked. `scope` is which limit ran out
    ("pair": this account from this address; "ip": this address; "user": this account from
    everywhere); `retry_after` is in seconds and `until` a Unix time (when the lock ends)."""

    scope: str
    retry_after: int
    until: float

    @property
    def message(self) -> str:
        """What the person is told: whose lock it is and when it ends (in the portal's time zone)."""
        minutes = max(1, math.ceil(self.retry_after / 60))
        who = {
            "pair": "this account from your address",
            "ip": "your address",
            "user": "this account",
        }[self.scope]
        ends = timezone.localtime(datetime.fromtimestamp(self.until, tz=UTC))
        return (
            f"Too many failed sign-in attempts for {who}. Try again in {minutes} minute{'s' if minutes > 1 else ''}"
            f" (after {ends:%H:%M} {ends.tzname()})."
        )


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]


def _generation(username: str) -> int:
    """The account's counter generation (0 until a platform admin first unlocks it)."""
    return int(cache.get(f"plinth:auth-gen:{_digest(username)}") or 0)


def _limits() -> dict[str, int]:
    return {
        "pair": settings.PLINTH_LOGIN_FAILURES_PER_USER,
        "ip": settings.PLINTH_LOGIN_FAILURES_PER_IP,
        "user": settings.PLINTH_LOGIN_ACCOUNT_CEILING,
    }


def _keys(ip: str | None, username: str) -> dict[str, str]:
    """The counters an attempt is counted against, in the order they are tried."""
    keys = {}
    account = _digest(username) if username else ""
    gen = _generation(username) if username else 0
    if username:
        keys["pair"] = f"plinth:auth-failures:pair:{gen}:{account}:{_digest(ip or '-')}"
    if ip:
        keys["ip"] = f"plinth:auth-failures:ip:{_digest(ip)}"
    if username:
        keys["user"] = f"plinth:auth-failures:user:{gen}:{account}"
    return keys


def _count(key: str, window: int) -> int:
    """Add one to `key` atomically and return the new value; a new counter starts a window."""
    for _ in range(3):
        if cache.add(key, 1, timeout=window):
            cache.set(f"{key}:until", time.time() + window, timeout=window)
            return 1
        try:
            return int(cache.incr(key))
        except ValueError:  # expired between add and incr: start again
            continue
    return 1


def _give_back(key: str) -> None:
    with contextlib.suppress(ValueError):  # already expired: nothing to give back
        cache.decr(key)


def begin(ip: str | None, username: str) -> Lockout | None:
    """Count one sign-in attempt against every counter that applies, *before* the password
    is checked. Returns the lockout that refuses it (the attempt is then not counted) or
    None: go on and check the password; call `succeeded` if it was right. A wrong password
    needs no call: it stays counted until the window ends."""
    window = settings.PLINTH_LOGIN_WINDOW_SECONDS
    limits = _limits()
    counted: list[str] = []
    for scope, key in _keys(ip, username).items():
        n = _count(key, window)
        counted.append(key)
        if n > limits[scope]:
            for done in counted:
                _give_back(done)
            now = time.time()
            until = float(cache.get(f"{key}:until") or now + window)
            return Lockout(scope, max(math.ceil(until - now), 1), until)
    return None


def succeeded(ip: str | None, username: str) -> None:
    """The password was right: this account's count from this address starts over, and the
    attempt is given back to the address's and the account's counters."""
    keys = _keys(ip, username)
    if "pair" in keys:
        cache.delete_many([keys["pair"], f"{keys['pair']}:until"])
    for scope in ("ip", "user"):
        if scope in keys:
            _give_back(keys[scope])


def failures(username: str) -> int:
    """Attempts counted against the account from everywhere in the current window (for the
    console; 0 when none)."""
    return int(cache.get(_keys(None, username)["user"]) or 0) if username else 0


def unlock(username: str) -> int:
    """Lift every lock on the account (per address and the ceiling) and return how many
    attempts were counted against it. Addresses locked by guesses at *several* accounts
    stay locked until their window ends."""
    counted = failures(username)
    gen_key = f"plinth:auth-gen:{_digest(username)}"
    cache.add(gen_key, 0, timeout=None)
    cache.incr(gen_key)
    return counted
