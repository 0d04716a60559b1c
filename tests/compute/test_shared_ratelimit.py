"""The Kubernetes API rate limit shared by all processes (SharedRateLimiter over Redis),
tested against the real Redis this machine and CI run. Skipped when Redis does not
answer, unless PLINTH_REQUIRE_REDIS=1 (CI sets it) makes that a failure."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import pytest

from apps.compute.k8s.ratelimit import RateLimiter, SharedRateLimiter, limiter_mode, shared_limiter

REDIS_URL = os.environ.get("PLINTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_answers() -> bool:
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _redis_answers():
        if os.environ.get("PLINTH_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} does not answer and PLINTH_REQUIRE_REDIS=1")
        pytest.skip(f"Redis at {REDIS_URL} does not answer")
    return REDIS_URL


def test_two_processes_share_one_budget(redis_url: str) -> None:
    key = f"plinth-test:{uuid.uuid4().hex}"
    # Two limiters stand for two processes: 5 requests a minute between them.
    web = SharedRateLimiter(5 / 60, redis_url, key=key, window_seconds=60)
    worker = SharedRateLimiter(5 / 60, redis_url, key=key, window_seconds=60)
    granted = [web.try_acquire() for _ in range(3)] + [worker.try_acquire() for _ in range(2)]
    assert granted == [True] * 5
    assert worker.try_acquire() is False
    assert web.try_acquire() is False
    # A per-process limiter of the same rate would still have let each of them through.
    other_budget = SharedRateLimiter(5 / 60, redis_url, key=f"{key}-other", window_seconds=60)
    assert other_budget.try_acquire() is True


def test_a_caller_over_the_shared_budget_waits_for_the_window_to_move(redis_url: str) -> None:
    key = f"plinth-test:{uuid.uuid4().hex}"
    # Two requests a minute: however slowly this machine runs the lines below, the third
    # request falls in the same window (a one-second window would make that a race).
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        # A minute is too long to wait in a test: a fresh budget stands for the window moving on.
        first.key = f"{key}-next-window"

    first = SharedRateLimiter(2 / 60, redis_url, key=key, window_seconds=60, sleep=sleep)
    second = SharedRateLimiter(2 / 60, redis_url, key=key, window_seconds=60)
    assert first.acquire() == 0 and second.acquire() == 0
    waited = first.acquire()  # the third request in the window must wait its turn
    assert len(slept) == 1 and 0 < slept[0] <= 0.05  # polled, not slept through the whole window
    assert waited == pytest.approx(slept[0], abs=1e-6)
    assert first.stats.granted == 2 and second.stats.granted == 1
    assert second.try_acquire() is False  # the old window is still full for everyone else


def test_it_falls_back_to_a_per_process_limit_when_the_storage_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    limiter = SharedRateLimiter(1000, dead)
    assert limiter.acquire() == 0  # not an error: the cluster is still protected per process
    assert limiter.stats.granted == 1


def test_settings_choose_the_shared_limit_when_storage_is_configured(settings: Any, redis_url: str) -> None:
    from apps.compute.k8s import ratelimit

    ratelimit._shared.clear()
    try:
        settings.PLINTH_KUBE_RATELIMIT_STORAGE = redis_url
        shared = shared_limiter(7.0)
        assert isinstance(shared, SharedRateLimiter)
        assert "shared by all processes" in limiter_mode(shared)
        ratelimit._shared.clear()
        settings.PLINTH_KUBE_RATELIMIT_STORAGE = ""
        local = shared_limiter(7.0)
        assert type(local) is RateLimiter
        assert "per process" in limiter_mode(local)
    finally:
        ratelimit._shared.clear()
