"""One retry rule for every long operation that talks to something that may be down
(webhook and email deliveries, promotion applies, launch submits): exponential backoff with
full jitter, and a cap on attempts.

The attempt count and the time of the next try live on the operation's row (the reconciler
reads them after a crash); this module only says how long to wait and when to give up.
Full jitter (a wait drawn uniformly below the exponential ceiling) keeps many rows that
failed together, say when a receiver went down, from all coming back at the same second.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# Module-level so tests can pin the draw (see `ceiling` for the upper bound it scales).
_random = random.Random()  # noqa: S311 -- spreading retries, not a secret


def jitter() -> float:
    """A fraction in [0, 1): where in its window a wait falls."""
    return _random.random()


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (the first included); after the n-th failed try the next
    waits a random time of at least `floor` seconds and below `base * 2**(n-1)`, capped at
    `cap` seconds."""

    base: float
    cap: float
    attempts: int
    floor: float = 1.0

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed try number `attempt` (1 for the first try)."""
        return float(min(self.cap, self.base * 2 ** max(attempt - 1, 0)))

    def delay(self, attempt: int) -> int:
        """Seconds to wait after failed try number `attempt`, jittered, whole seconds."""
        top = self.ceiling(attempt)
        return max(math.ceil(self.floor), min(math.ceil(top * jitter()), math.ceil(top)))

    def next_try(self, attempt: int, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delay(attempt))

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` tries have been made and none may follow."""
        return attempts >= self.attempts
