"""A task that meets a locked SQLite database (another process held the write lock past the
busy timeout) is retried with backoff and jitter instead of dying; any other database
error still fails it at once. Run through Celery's tracer (`apply`), the path a worker
takes, so retries are real Celery retries."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError

from portal import celery as plinth_celery
from portal.celery import app, is_database_locked, locked_retry_countdown

attempts: list[int] = []
script: list[BaseException | None] = []


@app.task(bind=True, name="tests.core.test_task_retry.touch_the_database")
def touch_the_database(self: Any) -> str:
    """Fails with the next scripted error, if any, else succeeds."""
    attempts.append(self.request.retries)
    failure = script.pop(0) if script else None
    if failure is not None:
        raise failure
    return "done"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    attempts.clear()
    script.clear()
    waits: list[tuple[int, float]] = []
    real = plinth_celery.locked_retry_countdown

    def recorded(retries: int) -> float:
        waits.append((retries, real(retries)))
        return waits[-1][1]

    monkeypatch.setattr(plinth_celery, "locked_retry_countdown", recorded)
    return waits


def locked(text: str = "database is locked") -> OperationalError:
    return OperationalError(text)


def test_a_task_that_meets_a_locked_database_is_retried_until_it_succeeds(_fresh: list[tuple[int, float]]) -> None:
    script.extend([locked(), locked("database table is locked: launches_launch"), None])
    result = touch_the_database.apply()
    assert result.successful(), result.traceback
    assert result.get() == "done"
    assert attempts == [0, 1, 2]  # the same task, retried twice by Celery
    assert [retries for retries, _ in _fresh] == [0, 1]
    assert 1 <= _fresh[0][1] <= 2 and 1 <= _fresh[1][1] <= 4  # backed off (whole seconds), jittered


def test_any_other_database_error_fails_the_task_at_once() -> None:
    script.append(OperationalError("no such table: launches_launch"))
    result = touch_the_database.apply()
    assert result.failed()
    assert isinstance(result.result, OperationalError) and "no such table" in str(result.result)
    assert attempts == [0]


def test_a_database_locked_for_good_fails_the_task_after_its_retries() -> None:
    script.extend([locked() for _ in range(20)])
    result = touch_the_database.apply()
    assert result.failed()
    assert is_database_locked(result.result)
    assert attempts == list(range(plinth_celery.PlinthTask.locked_max_retries + 1))


def test_called_as_a_plain_function_it_raises_instead_of_retrying() -> None:
    script.append(locked())
    with pytest.raises(OperationalError, match="database is locked"):
        touch_the_database()
    assert attempts == [0]


def test_the_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    for retries in range(10):
        ceiling = min(30, 2 * 2**retries)
        waits = {locked_retry_countdown(retries) for _ in range(200)}
        assert all(1 <= wait <= ceiling for wait in waits), (retries, waits)
        assert max(waits) > ceiling // 2  # it grows with each retry...
        assert len(waits) > 1  # ...and is jittered: workers that collided do not retry in lockstep


def test_only_sqlites_lock_errors_count_as_locked() -> None:
    assert is_database_locked(OperationalError("database is locked"))
    assert is_database_locked(OperationalError("database table is locked"))
    assert not is_database_locked(OperationalError("could not connect to server"))
    assert not is_database_locked(RuntimeError("database is locked"))  # not a database error


def test_the_embedded_brokers_lock_errors_count_as_locked_too() -> None:
    """A task that sends a message through the SQLite broker meets SQLAlchemy's error."""
    import sqlite3

    from sqlalchemy.exc import OperationalError as SqlAlchemyOperationalError

    raw = sqlite3.OperationalError("database is locked")
    assert is_database_locked(raw)
    assert is_database_locked(SqlAlchemyOperationalError("INSERT INTO kombu_message", {}, raw))
    assert not is_database_locked(
        SqlAlchemyOperationalError("SELECT 1", {}, sqlite3.OperationalError("disk I/O error"))
    )
