"""The one retry rule: exponential ceilings, full jitter below them, a floor, a cap on the
wait and on the attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apps.core import retry
from apps.core.retry import RetryPolicy

POLICY = RetryPolicy(base=5, cap=300, attempts=4)


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    assert [POLICY.ceiling(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]


@pytest.mark.parametrize("attempt", range(1, 10))
def test_every_wait_lies_between_the_floor_and_its_ceiling(attempt: int) -> None:
    waits = {POLICY.delay(attempt) for _ in range(300)}
    assert min(waits) >= 1
    assert max(waits) <= POLICY.ceiling(attempt)


def test_waits_are_spread_over_the_window_not_all_at_its_top() -> None:
    # 300 draws below a 160 s ceiling: full jitter lands some in the lower half and
    # never all on one value (a policy without jitter would return 160 every time).
    waits = [POLICY.delay(6) for _ in range(300)]
    assert len(set(waits)) > 20
    assert min(waits) < POLICY.ceiling(6) / 2


def test_the_draw_decides_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "jitter", lambda: 0.0)
    assert POLICY.delay(3) == 1  # the floor, not zero: a retry never fires at once
    monkeypatch.setattr(retry, "jitter", lambda: 0.5)
    assert POLICY.delay(3) == 10
    monkeypatch.setattr(retry, "jitter", lambda: 1.0)
    assert POLICY.delay(3) == 20
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert POLICY.next_try(3, now) == now + timedelta(seconds=20)


def test_it_gives_up_once_the_attempts_are_spent() -> None:
    assert [POLICY.exhausted(n) for n in range(0, 6)] == [False, False, False, False, True, True]
