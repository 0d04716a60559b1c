"""Celery tasks of the GPU app, all periodic (beat) and idempotent: a second run in the same
minute, or two workers running one at once, change nothing twice (samples are unique per
GPU and minute, roll-ups are recomputed per hour, findings are one active per GPU)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def sample_gpus() -> dict[str, Any]:
    """One sampler pass (every PLINTH_GPU_SAMPLE_SECONDS, default 60)."""
    from apps.gpus.sampler import run_pass

    result = run_pass()
    return {"at": result.at.isoformat(), "gpus": result.gpus, "allocated": result.allocated, "seconds": result.seconds}


@shared_task(ignore_result=True)
def detect_idle_gpus() -> dict[str, int]:
    """Idle findings, notices and reclaims (every minute, after the sampler)."""
    from apps.gpus.idle import detect

    return detect()


@shared_task(ignore_result=True)
def roll_up_gpu_samples() -> dict[str, Any]:
    """Hourly roll-ups of complete hours, then retention (every few minutes)."""
    from apps.gpus.store import prune, roll_up

    rolled = roll_up()
    removed = prune()
    return {"hours": rolled["hours"], "rows": rolled["rows"], **removed}
