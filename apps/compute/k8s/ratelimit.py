"""Client-side rate limiting towards the Kubernetes API server."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

NS_PER_SECOND = 1_000_000_000
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LimiterStats:
    granted: int  # requests let through so far
    waited_seconds: float  # time callers spent waiting for a token, all together
    peak_per_second: int  # the most requests let through within any one second


class RateLimiter:
    """A token bucket in front of every request Plinth makes to the API server.

    The API server protects itself with priority and fairness, and a portal that polls many
    namespaces, resubmits after an outage or fans out a sweep can burst far past what the
    platform team granted it; client-go-style throttling keeps Plinth a polite client.

    Implemented as GCRA (the "virtual scheduling" form of a token bucket) on integer
    nanoseconds, so float rounding can never squeeze an extra request into a window. The
    default burst is 1: then no window of one second ever holds more than `qps` requests
    (rounded up). A burst of B lets B - 1 more through right after an idle spell.

    Thread-safe: Celery's thread pool and the web process share one limiter per process.
    `clock` (nanoseconds) and `sleep` (seconds) are injectable so tests run on a fake clock."""

    def __init__(
        self,
        qps: float,
        burst: int = 1,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.qps = qps
        self.burst = burst
        # qps <= 0 switches the limiter off (counters keep working).
        # Rounded up: spacing requests a nanosecond too far apart is harmless, too close is not.
        self._interval = math.ceil(NS_PER_SECOND / qps) if qps > 0 else 0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: int | None = None  # theoretical arrival time of the next request
        self._granted = 0
        self._waited_ns = 0
        self._window: deque[int] = deque()
        self._peak = 0

    def acquire(self) -> float:
        """Block until a request may go out; returns the seconds this caller waited."""
        waited = 0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._try_take(now)
                if wait == 0:
                    self._granted += 1
                    self._waited_ns += waited
                    self._record(now)
                    return waited / NS_PER_SECOND
            # Sleep outside the lock so other threads can check in; whoever wakes first and
            # finds a token takes it (no fairness promise, which a poller does not need).
            self._sleep(wait / NS_PER_SECOND)
            waited += wait

    def _try_take(self, now: int) -> int:
        if self._interval == 0:
            return 0
        tat = now if self._tat is None else max(self._tat, now)
        allowed_at = tat - (self.burst - 1) * self._interval
        if now < allowed_at:
            return allowed_at - now
        self._tat = tat + self._interval
        return 0

    def _record(self, now: int) -> None:
        window = self._window
        while window and window[0] <= now - NS_PER_SECOND:
            window.popleft()
        window.append(now)
        self._peak = max(self._peak, len(window))

    @property
    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(self._granted, self._waited_ns / NS_PER_SECOND, self._peak)

    def reset_stats(self) -> None:
        with self._lock:
            self._granted = 0
            self._waited_ns = 0
            self._window.clear()
            self._peak = 0


class SharedRateLimiter(RateLimiter):
    """The same limit, one budget for every process: web, workers and beat on every host.

    The cluster sees the sum of what all of Plinth's processes send, so a per-process
    bucket of `qps` lets N processes send N * `qps`. This one counts requests in a moving
    window in shared storage (the `limits` library; Redis in production): no window of
    `window_seconds` ever holds more than `qps * window_seconds` requests from all of them
    together. When the storage does not answer, the process falls back to its own
    per-process bucket (logged) rather than stop talking to the cluster.

    `storage_uri`: a `limits` storage URI ("redis://host:6379/0"); `key`: the budget's
    name (processes sharing a key share a budget)."""

    def __init__(
        self,
        qps: float,
        storage_uri: str,
        *,
        key: str = "plinth:kube-api",
        window_seconds: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        super().__init__(qps, sleep=sleep)
        self.storage_uri = storage_uri
        self.key = key
        self.window_seconds = window_seconds
        # Rounded down: a request fewer per window is harmless, one more is not.
        self._item = RateLimitItemPerSecond(max(1, math.floor(qps * window_seconds + 1e-9)), window_seconds)
        self._strategy = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self._fallback_logged = False

    @property
    def mode(self) -> str:
        """The limit in words, for the status page (the storage without credentials)."""
        return f"{self.qps:g} requests/s shared by all processes ({self.storage_uri.split('@')[-1]}, moving window)"

    def try_acquire(self) -> bool:
        """Take one request from the shared budget if there is one now; never waits."""
        with self._lock:
            return self._try_take(self._clock()) == 0

    def _try_take(self, now: int) -> int:
        if self._interval == 0:
            return 0
        try:
            if self._strategy.hit(self._item, self.key):
                return 0
            reset_at = self._strategy.get_window_stats(self._item, self.key).reset_time
        except Exception:  # storage down: keep the cluster safe from this process at least
            if not self._fallback_logged:
                logger.warning("rate-limit storage %s unavailable; limiting per process", self.storage_uri)
                self._fallback_logged = True
            return super()._try_take(now)
        # Poll at least every 50 ms: the moving window frees one slot at a time.
        return max(1_000_000, min(int((reset_at - time.time()) * NS_PER_SECOND), 50_000_000))


_shared: dict[float, RateLimiter] = {}
_shared_lock = threading.Lock()


def limiter_mode(limiter: RateLimiter) -> str:
    """How `limiter` enforces its rate, in words, for the status page."""
    if isinstance(limiter, SharedRateLimiter):
        return limiter.mode
    if limiter.qps <= 0:
        return "off (PLINTH_KUBE_QPS is 0)"
    return f"{limiter.qps:g} requests/s per process (no shared storage configured: PLINTH_KUBE_RATELIMIT_STORAGE)"


def shared_limiter(qps: float | None = None) -> RateLimiter:
    """One limiter per process and rate: every gateway built from settings draws on it, so
    the limit holds however many backend objects a process makes. With
    `PLINTH_KUBE_RATELIMIT_STORAGE` set (it defaults to a configured Redis cache or broker)
    the budget is shared by all processes (`SharedRateLimiter`); else it is per process."""
    rate = float(settings.PLINTH_KUBE_QPS if qps is None else qps)
    with _shared_lock:
        if rate not in _shared:
            storage = settings.PLINTH_KUBE_RATELIMIT_STORAGE
            _shared[rate] = SharedRateLimiter(rate, storage) if storage and rate > 0 else RateLimiter(rate)
        return _shared[rate]
