"""Sending Celery tasks from services."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task: Any, *args: Any) -> None:
    """Send `task(*args)` once the current transaction commits. The row that records the
    intent is already saved, so a broker outage must not turn a committed change into an
    error page: it is logged, and the task's periodic reconciler picks the row up."""

    def send() -> None:
        try:
            task.delay(*args)
        except Exception:
            logger.warning("could not enqueue %s%r; its reconciler will retry", task.name, args, exc_info=True)

    transaction.on_commit(send)
