"""The Celery application. Tasks live in each app's tasks.py and are found automatically."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# The worker downloads model versions (deployments): MLflow's tqdm bars would print one log
# line per update in a worker's log, so they are off unless asked for.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# SQLite's answers when another process holds the write lock past the busy timeout (the
# embedded mode shares one file between web, worker and beat).
LOCKED_DATABASE_MESSAGES = ("database is locked", "database table is locked")


def is_database_locked(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" / "database table is locked" only, as Django,
    sqlite3 or SQLAlchemy (the embedded broker's kombu transport, when a task sends a message)
    raise it: other OperationalErrors (a lost PostgreSQL connection, a missing table) are not
    retried here."""
    import sqlite3

    from django.db import OperationalError
    from sqlalchemy.exc import OperationalError as SqlAlchemyOperationalError

    kinds = (OperationalError, sqlite3.OperationalError, SqlAlchemyOperationalError)
    return isinstance(exc, kinds) and any(text in str(exc).lower() for text in LOCKED_DATABASE_MESSAGES)


def locked_retry_countdown(retries: int) -> int:
    """Seconds before retry number `retries` + 1: the project's one retry rule
    (apps.core.retry: exponential backoff with full jitter), so workers that collided on
    the lock do not collide again in lockstep."""
    from apps.core.retry import RetryPolicy

    return RetryPolicy(base=2.0, cap=30.0, attempts=PlinthTask.locked_max_retries + 1).delay(retries + 1)


class PlinthTask(Task):  # type: ignore[misc]
    """Every task's base.

    A periodic reconciler from the beat schedule runs one pass at a time across all workers
    (apps.core.leases): a pass started while another still runs returns None at once.
    `sync_launches` takes its lease itself; calling a task as a plain function (tests,
    shells) takes none.

    A task that meets a locked SQLite database is retried with backoff and jitter (at most
    `locked_max_retries` times) instead of dying: every task is idempotent (it claims its row
    with a conditional UPDATE), and the failed attempt's transaction was rolled back.
    Celery's `autoretry_for` matches by exception class, and OperationalError also means
    other failures, so the narrower check is made here. Called directly, it raises."""

    locked_max_retries = 6

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._run_leased(*args, **kwargs)
        except Exception as exc:
            if not is_database_locked(exc) or self.request.called_directly:
                raise
            countdown = locked_retry_countdown(self.request.retries or 0)
            raise self.retry(exc=exc, countdown=countdown, max_retries=self.locked_max_retries) from exc

    def _run_leased(self, *args: Any, **kwargs: Any) -> Any:
        period = _reconciler_periods().get(self.name)
        if period is None or self.request.called_directly:
            return super().__call__(*args, **kwargs)
        from apps.core.leases import single_pass

        with single_pass(self.name, period) as mine:
            return super().__call__(*args, **kwargs) if mine else None


def _reconciler_periods() -> dict[str, float]:
    """Task name → period (seconds) of each beat reconciler that needs the generic lease."""
    from django.conf import settings

    # sync_launches takes its own lease; a heartbeat is per worker and harmless twice.
    unleased = {"apps.launches.tasks.sync_launches", "apps.core.tasks.heartbeat"}
    schedule: dict[str, dict[str, Any]] = settings.CELERY_BEAT_SCHEDULE
    return {e["task"]: float(e["schedule"]) for e in schedule.values() if e["task"] not in unleased}


app: Celery = Celery("plinth", task_cls=PlinthTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
