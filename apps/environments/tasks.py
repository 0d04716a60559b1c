"""Celery tasks of environments. `build_environment(pk)` runs one local build (claimed with a
conditional UPDATE, so a second message for the same build is a no-op); the periodic
`reconcile_builds` (beat) re-sends builds whose message was lost or whose worker died and
settles environments that missed the end of their build."""

from __future__ import annotations

import logging
import shutil
import time

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.environments import builder
from apps.environments.models import BuildStatus, EnvironmentBuild, EnvironmentState

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def build_environment(build_pk: int) -> str:
    """Build `build_pk` (builder.build_now); returns its status afterwards. A build another
    worker holds, or one already ready or failed, is left as it is."""
    build = EnvironmentBuild.objects.filter(pk=build_pk).first()
    if build is None:
        return "gone"
    return str(builder.build_now(build_pk).status)


@shared_task
def reconcile_builds() -> dict[str, int]:
    """Beat (every PLINTH_ENVIRONMENT_SYNC_SECONDS), one pass at a time across workers
    (apps.core.leases): re-sends the task of queued builds no worker claimed within a minute
    (`lease_expires_at` passed), puts building ones whose lease expired (their worker died)
    back to queued and re-sends them, and settles environments still `building` whose build
    has ended (an environment created while its build was finishing).
    and removes temporary folders dead workers left (`remove_orphan_folders`).
    Returns {"requeued": n, "reclaimed": n, "settled": n, "removed": n} or {"skipped": 1}."""
    from apps.core.leases import single_pass

    period = float(settings.CELERY_BEAT_SCHEDULE["environments-reconcile-builds"]["schedule"])
    with single_pass("reconcile_builds", period) as mine:
        if not mine:
            return {"skipped": 1}
        return reconcile_builds_pass()


def reconcile_builds_pass() -> dict[str, int]:
    """One pass of `reconcile_builds`, without its lease (tests call it directly)."""
    counts = {"requeued": 0, "reclaimed": 0, "settled": 0, "removed": 0}
    now = timezone.now()
    due = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    # A dead worker's build: back to queued under no lease, so the next claim is a plain one.
    counts["reclaimed"] = EnvironmentBuild.objects.filter(due, status=BuildStatus.BUILDING).update(
        status=BuildStatus.QUEUED,
        lease_token="",
        lease_expires_at=None,
        step="Queued again: the worker building it stopped",
    )
    for pk in EnvironmentBuild.objects.filter(due, status=BuildStatus.QUEUED).values_list("pk", flat=True):
        # Bumped first, conditionally: two passes at once send it once.
        if not EnvironmentBuild.objects.filter(due, pk=pk, status=BuildStatus.QUEUED).update(
            lease_expires_at=now + builder.REQUEUE_AFTER
        ):
            continue
        try:
            build_environment.delay(pk)
        except Exception:  # the broker is down: the next pass tries again
            logger.warning("could not send the build of %s; next pass", pk, exc_info=True)
            EnvironmentBuild.objects.filter(pk=pk, status=BuildStatus.QUEUED).update(lease_expires_at=None)
            continue
        counts["requeued"] += 1
    ended = EnvironmentBuild.objects.filter(
        status__in=[BuildStatus.READY, BuildStatus.FAILED], environments__state=EnvironmentState.BUILDING
    ).distinct()
    for build in ended:
        with transaction.atomic():
            counts["settled"] += len(builder.settle_environments(build))
    counts["removed"] = remove_orphan_folders()
    return counts


def remove_orphan_folders() -> int:
    """Remove temporary build folders a dead worker left (`.tmp-<hash>-<token>`, `.old-…`):
    those whose token no building row holds and that nothing touched for longer than a
    build may run (so a build finishing right now is never raced). Returns how many."""
    root = builder.environments_dir()
    if not root.is_dir():
        return 0
    cutoff = time.time() - float(settings.PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS) - 2 * builder.LEASE.total_seconds()
    candidates = [p for p in root.iterdir() if p.name.startswith((".tmp-", ".old-")) and p.is_dir()]
    if not candidates:
        return 0
    live = set(EnvironmentBuild.objects.filter(status=BuildStatus.BUILDING).values_list("lease_token", flat=True))
    removed = 0
    for folder in candidates:
        token = folder.name.rsplit("-", 1)[-1]
        try:
            stale = folder.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if token not in live and stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
