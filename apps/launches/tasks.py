"""Celery tasks for launches. Each takes a primary key, claims its row with a conditional
UPDATE, and is safe to run twice; `sync_launches` (beat) repairs what a crash left."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import timedelta

from celery import shared_task
from django.db.models import F, Q
from django.utils import timezone

from apps.compute.base import BackendRejected, BackendUnavailable
from apps.compute.registry import get_backend
from apps.core.retry import RetryPolicy
from apps.launches import services
from apps.launches.models import TERMINAL, Launch, Status, Sweep, SweepStatus
from apps.tracking.gateway import MlflowError, MlflowUnavailable

logger = logging.getLogger(__name__)

STALE_SUBMITTING = timedelta(seconds=60)  # a claim whose worker died (no retry time recorded)
STALE_QUEUED = timedelta(seconds=120)
# A backend that could not take a submit: waits below 30 s, 60 s, 120 s, 240 s (jittered), 5 tries.
SUBMIT_RETRY = RetryPolicy(base=30, cap=600, attempts=5)


@shared_task(acks_late=True)
def submit_launch(launch_pk: int) -> str:
    """queued → submitting (claimed) → backend.submit → pending. Another worker holding the
    claim, or a launch already past `queued`, makes this a no-op."""
    claimed = Launch.objects.filter(pk=launch_pk, status=Status.QUEUED).update(
        status=Status.SUBMITTING,
        submit_attempts=F("submit_attempts") + 1,
        next_submit_at=None,
        updated_at=timezone.now(),
    )
    if not claimed:
        return "not queued"
    launch = Launch.objects.select_related("project__team", "template").get(pk=launch_pk)
    return _submit(launch)


def _submit(launch: Launch) -> str:
    from apps.launches import workloads

    if launch.sweep_id is not None and workloads.WORKLOAD_KEY in (launch.resources or {}):
        # A trial of a sweep that runs as one Indexed Job: claim and (re)submit them all at once.
        return workloads.submit(launch.sweep_id)
    backend = get_backend(launch.backend)
    try:
        backend.submit(launch)
    except BackendRejected as exc:
        services.transition(
            launch, Status.FAILED, status_reason=f"rejected by the {launch.backend} backend: {exc.message}"
        )
        close_mlflow_run.delay(launch.pk)
        return "rejected"
    except BackendUnavailable as exc:
        # Stay in `submitting`: the reconciler resubmits once `next_submit_at` has passed
        # (the name is deterministic, so a job the cluster did accept is found, not
        # duplicated) or fails it after SUBMIT_RETRY.attempts tries.
        now = timezone.now()
        Launch.objects.filter(pk=launch.pk, status=Status.SUBMITTING).update(
            status_reason=f"{exc.message} Retrying.",
            next_submit_at=SUBMIT_RETRY.next_try(launch.submit_attempts, now),
            updated_at=now,
        )
        return "unavailable"
    services.transition(launch, Status.PENDING, submitted_at=timezone.now(), status_reason="submitted")
    try:
        from apps.tracking.gateway import gateway

        gateway().set_tag(launch.mlflow_run_id, "plinth.launch", str(launch.pk))
    except Exception:  # the tag is a convenience; the run is already linked from the launch
        logger.info("could not tag MLflow run %s", launch.mlflow_run_id)
    return "submitted"


@shared_task(acks_late=True)
def cancel_on_backend(launch_pk: int) -> None:
    launch = Launch.objects.select_related("project__team", "template").filter(pk=launch_pk).first()
    if launch is None or launch.status != Status.CANCELLING:
        return
    try:
        get_backend(launch.backend).cancel(launch)
    except BackendUnavailable:
        return  # the reconciler asks again on its next pass
    sync_one(launch)


@shared_task(autoretry_for=(MlflowUnavailable,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def close_mlflow_run(launch_pk: int) -> None:
    launch = Launch.objects.filter(pk=launch_pk).first()
    if launch is not None:
        services.close_mlflow_run(launch)


@shared_task(autoretry_for=(MlflowUnavailable,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def delete_orphan_run(run_id: str) -> None:
    """Delete an MLflow run made for a launch that was then refused (the web request's own
    attempt failed). A run MLflow no longer has, or has deleted already, is done."""
    from apps.tracking.gateway import MlflowError, gateway

    with contextlib.suppress(MlflowError):
        gateway().delete_run(run_id)


def sync_one(launch: Launch) -> None:
    seen = get_backend(launch.backend).poll([launch]).get(launch.pk)
    if seen is not None and services.apply_observation(launch, seen):
        _after_end(launch)


def sync_many(launches: Iterable[Launch]) -> None:
    """`sync_one` for many launches with one poll per backend (a cancelled sweep's trials)."""
    by_backend: dict[str, list[Launch]] = {}
    for launch in launches:
        by_backend.setdefault(launch.backend, []).append(launch)
    for name, group in by_backend.items():
        observations = get_backend(name).poll(group)
        for launch in group:
            seen = observations.get(launch.pk)
            if seen is not None and services.apply_observation(launch, seen):
                _after_end(launch)


def _after_end(launch: Launch) -> None:
    with contextlib.suppress(MlflowUnavailable):  # else left for the next pass (mlflow_closed stays False)
        services.close_mlflow_run(launch)
        _cache_histories(launch)
    if launch.sweep_id:
        from apps.launches.pruning import record_objective

        # Before the sweep advances, so the optimiser's next ask knows this result; MLflow
        # down: the reconciler reads it later (`_optimise_sweeps`).
        with contextlib.suppress(MlflowUnavailable):
            record_objective(launch)
        advance_sweep.delay(launch.sweep_id)


def _cache_histories(launch: Launch) -> None:
    """Once the launch's MLflow run is closed, compute its cut histories in the background
    (apps.tracking.tasks.cache_run_histories), so the first compare of it is a warm one."""
    if launch.mlflow_closed and launch.mlflow_run_id:
        from apps.tracking.tasks import cache_run_histories

        cache_run_histories.delay(launch.mlflow_run_id)


@shared_task
def sync_launches() -> dict[str, int]:
    """The reconciler (beat, every few seconds): poll each backend in bulk, apply what it
    sees, end MLflow runs, resubmit or fail launches stuck in `submitting`, re-send queued
    launches whose message was lost, and retry cancels. One pass at a time across all
    workers (apps.core.leases): a pass that finds another running returns {"skipped": 1}."""
    from django.conf import settings

    from apps.core.leases import single_pass

    with single_pass("sync_launches", float(settings.PLINTH_SYNC_SECONDS)) as mine:
        if not mine:
            return {"skipped": 1}
        return _sync_launches_pass()


def _sync_launches_pass() -> dict[str, int]:
    counts = {"polled": 0, "ended": 0, "resubmitted": 0}
    now = timezone.now()
    live = Launch.objects.select_related("project__team", "template").filter(
        status__in=[Status.PENDING, Status.RUNNING, Status.CANCELLING]
    )
    by_backend: dict[str, list[Launch]] = {}
    for launch in live:
        by_backend.setdefault(launch.backend, []).append(launch)
    for name, launches in by_backend.items():
        try:
            observations = get_backend(name).poll(launches)
        except BackendUnavailable as exc:
            logger.warning("backend %s unavailable: %s", name, exc.message)
            continue
        for launch in launches:
            counts["polled"] += 1
            seen = observations.get(launch.pk)
            if seen is not None and services.apply_observation(launch, seen):
                counts["ended"] += 1
                _after_end(launch)
            elif launch.status == Status.CANCELLING and seen is not None and seen.state in ("pending", "running"):
                cancel_on_backend.delay(launch.pk)
    due = Q(next_submit_at__lte=now) | Q(next_submit_at__isnull=True, updated_at__lt=now - STALE_SUBMITTING)
    for launch in Launch.objects.select_related("project__team", "template").filter(due, status=Status.SUBMITTING):
        if SUBMIT_RETRY.exhausted(launch.submit_attempts):
            services.transition(
                launch,
                Status.FAILED,
                status_reason=f"could not submit after {launch.submit_attempts} attempts: {launch.status_reason}",
            )
            _after_end(launch)
            continue
        Launch.objects.filter(pk=launch.pk).update(
            submit_attempts=F("submit_attempts") + 1, next_submit_at=None, updated_at=now
        )
        launch.submit_attempts += 1
        _submit(launch)
        counts["resubmitted"] += 1
    for pk in Launch.objects.filter(status=Status.QUEUED, created_at__lt=now - STALE_QUEUED).values_list(
        "pk", flat=True
    ):
        submit_launch.delay(pk)
    # Sweeps waiting for quota that other launches hold have no trial of their own to end
    # and call them back: give every running sweep a chance each pass.
    from apps.launches.sweeps import advance

    counts["pruned"] = _optimise_sweeps()
    for sweep_pk in Sweep.objects.filter(status=SweepStatus.RUNNING).values_list("pk", flat=True):
        try:
            advance(sweep_pk)
        except Exception:  # one sweep's bad state (an optimiser error) never stops the others
            logger.exception("sweep %s: could not advance this pass", sweep_pk)
    for launch in Launch.objects.filter(
        status__in=TERMINAL, mlflow_closed=False, finished_at__gt=now - timedelta(days=7)
    ):
        try:
            services.close_mlflow_run(launch)
        except MlflowUnavailable:
            break
        _cache_histories(launch)
    return counts


def _optimise_sweeps() -> int:
    """For running sweeps that read an objective: read the results of ended trials a crash
    or an outage left unread, then one early-stopping pass (apps.launches.pruning). Returns
    how many trials were pruned. MLflow down: left for the next pass."""
    from apps.launches.pruning import prune_sweep, record_objectives, uses_objective

    pruned = 0
    for sweep in Sweep.objects.filter(status=SweepStatus.RUNNING).exclude(metric=""):
        if not uses_objective(sweep):
            continue
        try:
            record_objectives(sweep)
            pruned += len(prune_sweep(sweep.pk))
        except MlflowUnavailable as exc:
            logger.warning("sweep %s: MLflow unavailable, no early stopping this pass: %s", sweep.pk, exc)
            break
        except MlflowError as exc:  # MLflow refused one request (a deleted run): the others go on
            logger.warning("sweep %s: no early stopping this pass: %s", sweep.pk, exc.message)
        except Exception:  # one sweep's bad state never stops the pass (launches, other sweeps)
            logger.exception("sweep %s: early stopping failed this pass", sweep.pk)
    return pruned


@shared_task(acks_late=True)
def advance_sweep(sweep_pk: int) -> int:
    """Start the next trials of a sweep (sent whenever one of its trials ends)."""
    from apps.launches.sweeps import advance

    return advance(sweep_pk)


@shared_task(autoretry_for=(MlflowUnavailable,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def close_sweep_run(sweep_pk: int) -> None:
    from apps.launches.models import Sweep, SweepStatus
    from apps.tracking.gateway import gateway

    sweep = Sweep.objects.filter(pk=sweep_pk).first()
    if sweep is None or not sweep.mlflow_parent_run_id or sweep.status == SweepStatus.RUNNING:
        return  # running again (extended): ended once the extension ends (reopen_sweep_run)
    status = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}[sweep.status]
    gateway().end_run(sweep.mlflow_parent_run_id, status)


@shared_task(autoretry_for=(MlflowUnavailable,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def reopen_sweep_run(sweep_pk: int) -> str:
    """An ended sweep was extended: set its MLflow parent run back to RUNNING while the new
    trials run (`close_sweep_run` ends it again with the sweep). Returns what it did:
    "reopened", "skipped" (no such sweep, no parent run, or the sweep ended again before
    this ran) or "refused" (MLflow refused: the run was deleted in MLflow; nothing to do).
    MLflow down: retried with backoff (MlflowUnavailable).

    A sweep that ends while this runs is closed either way: after reopening, the sweep is
    read again, and if it ended meanwhile its run is ended here too (whichever of the two
    writes lands last, the run ends)."""
    from apps.tracking.gateway import gateway

    sweep = Sweep.objects.filter(pk=sweep_pk).first()
    if sweep is None or not sweep.mlflow_parent_run_id or sweep.status != SweepStatus.RUNNING:
        return "skipped"
    try:
        gateway().reopen_run(sweep.mlflow_parent_run_id)  # MlflowUnavailable: retried
    except MlflowError as exc:
        logger.info("sweep %s: MLflow refused to reopen run %s: %s", sweep_pk, sweep.mlflow_parent_run_id, exc)
        return "refused"
    sweep.refresh_from_db(fields=["status"])
    if sweep.status != SweepStatus.RUNNING:
        close_sweep_run.delay(sweep_pk)  # with its own retries
    return "reopened"


# --- sweeps that run as one Indexed Job (apps.launches.workloads) -------------------------------
@shared_task(acks_late=True)
def submit_workload(sweep_pk: int) -> str:
    """Submit every queued trial of a workload sweep as its one Indexed Job."""
    from apps.launches import workloads

    return workloads.submit(sweep_pk)


@shared_task(autoretry_for=(BackendUnavailable,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def delete_workload(sweep_pk: int) -> None:
    """A workload sweep was cancelled: delete its Job (every pod with it) and ConfigMap."""
    from apps.launches import workloads

    workloads.delete(sweep_pk)


@shared_task(autoretry_for=(BackendUnavailable,), retry_backoff=5, retry_backoff_max=300, max_retries=10)
def release_workload(sweep_pk: int) -> None:
    """A workload sweep ended: delete its ConfigMap (its Job stays until the TTL)."""
    from apps.launches import workloads

    workloads.release(sweep_pk)
