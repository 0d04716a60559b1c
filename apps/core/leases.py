"""One pass at a time for periodic reconcilers, across processes and hosts.

Beat sends `sync_launches` every few seconds; a pass that takes longer than that (a slow
cluster, MLflow timing out) must not be joined by the next one, which would poll and
resubmit the same launches twice. A pass takes a lease on its `ReconcilerPass` row with a
conditional UPDATE (free, or expired, → ours), which works the same on SQLite and
PostgreSQL and needs no cache shared between processes; it records when it started and
finished, for the status page. A pass that crashes leaves the lease to expire
(`PLINTH_RECONCILER_LEASE_SECONDS`, or two periods if longer)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.core.models import ReconcilerPass

logger = logging.getLogger(__name__)


def try_acquire(name: str, period_seconds: float, lease_seconds: float | None = None) -> str | None:
    """Take the lease of reconciler `name` if it is free or expired; returns the holder
    token to pass to `release`, or None when another pass holds it (counted in `skipped`).
    `period_seconds`: how often beat runs it (shown on the status page, and the threshold
    for "too slow"); `lease_seconds`: how long before a pass that never released is
    presumed dead (default: PLINTH_RECONCILER_LEASE_SECONDS, at least two periods)."""
    if lease_seconds is None:
        lease_seconds = max(float(settings.PLINTH_RECONCILER_LEASE_SECONDS), 2 * period_seconds)
    lease = float(lease_seconds)
    if not ReconcilerPass.objects.filter(name=name).exists():
        try:
            with transaction.atomic():
                ReconcilerPass.objects.create(name=name, period_seconds=period_seconds)
        except IntegrityError:  # another process created it first
            pass
    token = uuid.uuid4().hex
    now = timezone.now()
    taken = ReconcilerPass.objects.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now), name=name).update(
        holder=token, lease_until=now + timedelta(seconds=lease), last_started_at=now, period_seconds=period_seconds
    )
    if taken:
        return token
    ReconcilerPass.objects.filter(name=name).update(skipped=F("skipped") + 1)
    return None


def release(name: str, token: str, started: float) -> None:
    """Free the lease held under `token` and record the pass's duration (`started`: the
    `time.monotonic()` at its start). A lease that expired and was taken over is left alone."""
    ReconcilerPass.objects.filter(name=name, holder=token).update(
        holder="",
        lease_until=None,
        last_finished_at=timezone.now(),
        last_duration_seconds=round(time.monotonic() - started, 3),
    )


@contextmanager
def single_pass(name: str, period_seconds: float) -> Iterator[bool]:
    """`with single_pass("sync_launches", 3.0) as mine: if not mine: return` — yields True
    when this pass holds the lease (released, and timed, on exit), False when another pass
    is running and this one should skip."""
    token = try_acquire(name, period_seconds)
    if token is None:
        logger.info("reconciler %s: a pass is still running; skipping this one", name)
        yield False
        return
    started = time.monotonic()
    try:
        yield True
    finally:
        release(name, token, started)
