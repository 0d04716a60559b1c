"""The Celery application. Tasks live in each app's tasks.py and are found automatically."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class PlinthTask(Task):  # type: ignore[misc]
    """Every task's base. A periodic reconciler from the beat schedule runs one pass at a
    time across all workers (apps.core.leases): a pass started while another still runs
    returns None at once. `sync_launches` takes its lease itself; calling a task as a
    plain function (tests, shells) takes none."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
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
