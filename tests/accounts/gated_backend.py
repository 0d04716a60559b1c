"""An authentication backend for the race tests: it counts the password checks that reach
it and holds each one until the test lets them all go, so every attempt that gets past the
rate limit is in flight at the same time (no sleeps, no timing luck). It never accepts."""

from __future__ import annotations

import threading
from typing import Any


class Gate:
    """What the test and the backend share: a count of checks and of finished requests."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.checks = 0
        self.finished = 0
        self.release = threading.Event()

    def wait_until_settled(self, total: int, timeout: float = 60) -> bool:
        """True once every one of `total` attempts is either held here or already answered."""
        with self.cond:
            return self.cond.wait_for(lambda: self.checks + self.finished >= total, timeout=timeout)

    def done(self) -> None:
        with self.cond:
            self.finished += 1
            self.cond.notify_all()


GATE = Gate()


class GatedBackend:
    """Counts each password check, waits for the gate, then refuses (a wrong password)."""

    def authenticate(self, request: Any, username: str | None = None, password: str | None = None, **kw: Any) -> None:
        with GATE.cond:
            GATE.checks += 1
            GATE.cond.notify_all()
        GATE.release.wait(timeout=60)
        return None

    def get_user(self, user_id: Any) -> None:
        return None
