"""A grid or random sweep on the kubernetes backend as ONE cluster workload (an Indexed Job).

Every trial is a launch as usual (its row, its MLflow child run, its status, logs and cancel),
but they are all created up front, when the sweep starts, and submitted together: one
ConfigMap and one Job whatever the number of trials, so a cluster queue (Kueue) admits and
schedules the sweep as one workload instead of trial by trial. Trial i is index i of the
Job (`Launch.trial`); `Sweep.workload` names the Job. Adaptive strategies (bayes, cmaes)
keep one Job per trial: each trial depends on the results of the previous ones.

GPU quota rule: a workload sweep reserves `gpus per trial * min(parallelism, live trials)`:
at most `parallelism` of its pods exist at once, whatever the number of trials still waiting
for a slot, and the reservation shrinks as the last trials end. Its trials' own `gpus` are
not added on top (see `reserved_gpus` and apps.launches.services.gpus_in_use).

The lifecycle follows the launch pattern: the rows are written in one transaction (under the
sweep's and the project's locks, with the quota check), `submit_workload` (a Celery task)
claims the queued trials with one conditional UPDATE and submits the Job, the reconciler
(tasks.sync_launches) observes every trial through the normal poll path and resubmits a
workload whose submit the cluster could not take."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from apps.access import policies
from apps.access.roles import Action
from apps.accounts.models import User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.compute.base import BackendRejected, BackendUnavailable
from apps.compute.registry import get_backend
from apps.core.errors import ServiceError, Unavailable
from apps.core.queue import enqueue_on_commit
from apps.environments.models import Environment
from apps.launches.models import LIVE, Launch, Status, Sweep, SweepStatus, SweepStrategy
from apps.projects.models import Backend, Project

logger = logging.getLogger(__name__)

# Strategies whose whole plan is known up front (adaptive ones ask the optimiser per trial).
PLANNED_STRATEGIES = frozenset({SweepStrategy.GRID, SweepStrategy.RANDOM})
# The key of a trial's `resources` naming the Indexed Job that runs it (apps.compute.k8s.indexed).
WORKLOAD_KEY = "workload"


def workload_name(sweep: Sweep) -> str:
    """The Indexed Job's name for `sweep`: `plinth-sweep-<id>`."""
    return f"plinth-sweep-{sweep.pk}"


def eligible(sweep: Sweep) -> bool:
    """Whether `sweep` runs as one Indexed Job: grid or random, on a kubernetes project,
    a template with a command (the pod runs it by index), PLINTH_KUBE_INDEXED_SWEEPS on."""
    return (
        bool(settings.PLINTH_KUBE_INDEXED_SWEEPS)
        and sweep.strategy in PLANNED_STRATEGIES
        and sweep.project.backend == Backend.KUBERNETES
        and bool(sweep.template.command)
    )


def starts_as_workload(sweep_pk: int) -> bool:
    """True when the running sweep is to start as one Indexed Job: eligible, and neither its
    workload nor any trial exists yet. (Trials an extension adds later to a sweep whose
    workload exists run one Job each, through the ordinary path.)"""
    sweep = Sweep.objects.select_related("project", "template").filter(pk=sweep_pk).first()
    if sweep is None or sweep.status != SweepStatus.RUNNING or sweep.workload:
        return False
    return eligible(sweep) and not Launch.objects.filter(sweep=sweep).exists()


def reservation(sweep: Sweep, live_trials: int) -> int:
    """GPUs the workload sweep holds while `live_trials` of its trials are live:
    gpus per trial * min(parallelism, live trials)."""
    gpus = int((sweep.resources or {}).get("gpus") or 0)
    return gpus * min(sweep.parallelism, live_trials)


def in_workload() -> Q:
    """The launches that are an index of an Indexed Job (their resources name it)."""
    return Q(resources__has_key=WORKLOAD_KEY)


def reserved_gpus(project: Project) -> int:
    """The GPUs the project's workload sweeps hold (see the module docstring's rule); one query."""
    live = Q(trials__status__in=LIVE, trials__resources__has_key=WORKLOAD_KEY)
    sweeps = (
        Sweep.objects.filter(project=project)
        .exclude(workload="")
        .annotate(live=Count("trials", filter=live))
        .filter(live__gt=0)
    )
    return sum(reservation(sweep, sweep.live) for sweep in sweeps)


def _delete_runs(run_ids: Sequence[str]) -> None:
    """Delete MLflow runs made for trials that were then not created (a task retries)."""
    from apps.launches.tasks import delete_orphan_run

    for run_id in run_ids:
        with contextlib.suppress(Exception):  # the broker down too: the run stays, logged
            delete_orphan_run.delay(run_id)
    if run_ids:
        logger.info("deleting %d MLflow runs of trials that were not created", len(run_ids))


def create_trials(sweep_pk: int) -> int:
    """Create every trial of a workload sweep at once and queue ONE submission. Returns how
    many trials were created (0: already done, the sweep ended, or not possible right now).

    Order as in create_launch: access and input first, the quota (the sweep's reservation,
    `reservation(sweep, N)`) before MLflow, then one MLflow child run per trial (tagged with
    the parent run, the sweep and the index), then — in one transaction under the sweep's
    and the project's locks — the quota again, the N launch rows (`queued`), their audit
    events and the sweep's `workload`. The quota full or MLflow down: nothing is created and
    the next pass of the reconciler tries again. A permanent refusal (template retired, the
    creator lost the role, a trial's parameters no longer valid) stops the sweep with the
    reason, as for one-by-one sweeps."""
    from apps.launches.services import (
        ExperimentDeleted,
        QuotaExceeded,
        _check_quota,
        _experiment_id,
        check_template_allowed,
        create_experiment_run,
        environment_tags,
        launch_environment,
        mark_deleted_after_refusal,
    )
    from apps.launches.validation import clean_parameters, clean_resources

    sweep = Sweep.objects.select_related("project__team", "template", "created_by").get(pk=sweep_pk)
    if sweep.status != SweepStatus.RUNNING or sweep.workload or not sweep.planned:
        return 0
    project, template, actor = sweep.project, sweep.template, sweep.created_by
    try:
        if not policies.can(actor, Action.LAUNCH, project.team):
            raise ServiceError(f"{actor.username} may no longer launch in {project.full_slug}.")
        check_template_allowed(template, project)
        resources = clean_resources(template, sweep.resources)
        plans = [clean_parameters(template, {**sweep.base_parameters, **trial}) for trial in sweep.planned]
        environment = launch_environment(actor, project, template, sweep.environment_id).environment  # the sweep's
    except ServiceError as exc:
        from apps.launches.sweeps import _stop_planning

        _stop_planning(sweep_pk, exc)
        return 0
    wanted = reservation(sweep, len(plans))
    try:
        _check_quota(project, wanted)  # before MLflow: a full quota creates no run
    except QuotaExceeded:
        return 0
    tags = {
        "plinth.project": project.full_slug,
        "plinth.template": template.slug,
        "mlflow.user": actor.username,
        "plinth.sweep": str(sweep.pk),
        **environment_tags(environment),
    }
    if sweep.mlflow_parent_run_id:
        tags["mlflow.parentRunId"] = sweep.mlflow_parent_run_id
    runs: list[str] = []
    experiment_id = ""
    try:
        experiment_id = _experiment_id(project)
        for index in range(len(plans)):
            runs.append(
                create_experiment_run(
                    project, experiment_id, sweep.trial_name(index), tags={**tags, "plinth.trial": str(index)}
                )
            )
    except Unavailable:
        _delete_runs(runs)  # MLflow down midway: the next pass tries again
        return 0
    except ServiceError as exc:
        _delete_runs(runs)
        if isinstance(exc, ExperimentDeleted) and experiment_id:
            mark_deleted_after_refusal(experiment_id)
        from apps.launches.sweeps import _stop_planning

        _stop_planning(sweep_pk, exc)
        return 0
    try:
        created = _write_trials(sweep_pk, plans, resources, runs, experiment_id, wanted, environment)
    except QuotaExceeded:
        created = 0
    if not created:
        _delete_runs(runs)
    return created


def _write_trials(
    sweep_pk: int,
    plans: list[dict[str, Any]],
    resources: dict[str, Any],
    runs: list[str],
    experiment_id: str,
    wanted: int,
    environment: Environment,
) -> int:
    from apps.launches.services import _check_quota
    from apps.launches.tasks import submit_workload

    with transaction.atomic(durable=True):
        # The sweep's lock first, the project's second (as create_launch and cancel_sweep).
        sweep = (
            Sweep.objects.select_for_update(of=("self",))
            .select_related("project__team", "template", "created_by")
            .filter(pk=sweep_pk, status=SweepStatus.RUNNING, workload="")
            .first()
        )
        if sweep is None or Launch.objects.filter(sweep=sweep).exists():
            return 0  # another pass created them first, or the sweep ended meanwhile
        project = Project.objects.select_for_update().select_related("team").get(pk=sweep.project_id)
        _check_quota(project, wanted)
        template = sweep.template
        workload = workload_name(sweep)
        launches = Launch.objects.bulk_create(
            Launch(
                project=project,
                template=template,
                created_by=sweep.created_by,
                sweep=sweep,
                trial=index,
                name=sweep.trial_name(index),
                parameters=parameters,
                resources={**resources, WORKLOAD_KEY: workload},
                gpus=resources["gpus"],
                backend=project.backend,
                mlflow_run_id=run_id,
                mlflow_experiment_id=experiment_id,
                max_runtime_seconds=template.max_runtime_seconds,
                environment=environment,
            )
            for index, (parameters, run_id) in enumerate(zip(plans, runs, strict=True))
        )
        if any(launch.pk is None for launch in launches):  # a backend without RETURNING
            launches = list(Launch.objects.filter(sweep=sweep).order_by("trial"))
        sweep.workload = workload
        sweep.save(update_fields=["workload"])
        for launch in launches:
            record(
                sweep.created_by,
                AuditVerb.LAUNCH_CREATED,
                launch,
                team=project.team,
                project=project,
                after={
                    "template": template.slug,
                    "parameters": launch.parameters,
                    "resources": resources,
                    "environment": environment.label,
                },
            )
        enqueue_on_commit(submit_workload, sweep.pk)
    return len(launches)


def submit(sweep_pk: int) -> str:
    """Claim the sweep's queued trials (queued → submitting, one conditional UPDATE) and
    submit the workload; see `submit_claimed`. Safe to run twice at once: the second finds
    nothing queued and nothing submitting, or submits the same Job again (a no-op)."""
    now = timezone.now()
    Launch.objects.filter(in_workload(), sweep_id=sweep_pk, status=Status.QUEUED).update(
        status=Status.SUBMITTING, submit_attempts=F("submit_attempts") + 1, next_submit_at=None, updated_at=now
    )
    return submit_claimed(sweep_pk)


def submit_claimed(sweep_pk: int) -> str:
    """Submit the Indexed Job of the sweep's `submitting` trials (two API requests):
    success → `pending`; the cluster refusing → `failed` with its words, MLflow runs closed;
    the cluster unreachable → they stay `submitting` with the retry time (the reconciler
    resubmits: the names are deterministic, so nothing is created twice)."""
    from apps.launches.tasks import SUBMIT_RETRY, close_mlflow_run

    sweep = Sweep.objects.select_related("project__team", "template").filter(pk=sweep_pk).first()
    if sweep is None or not sweep.workload:
        return "no workload"
    ours = Launch.objects.filter(in_workload(), sweep=sweep)
    trials = list(ours.select_related("project__team", "template").order_by("trial"))
    claimed = ours.filter(status=Status.SUBMITTING)
    if not any(trial.status == Status.SUBMITTING for trial in trials):
        return "nothing to submit"
    backend = get_backend(sweep.project.backend)
    now = timezone.now()
    try:
        backend.submit_workload(sweep, trials)
    except BackendRejected as exc:
        failed = list(claimed.values_list("pk", flat=True))
        Launch.objects.filter(pk__in=failed, status=Status.SUBMITTING).update(
            status=Status.FAILED,
            status_reason=f"rejected by the {sweep.project.backend} backend: {exc.message}",
            finished_at=now,
            updated_at=now,
        )
        for pk in failed:
            close_mlflow_run.delay(pk)
        return "rejected"
    except BackendUnavailable as exc:
        attempts = max((t.submit_attempts for t in trials if t.status == Status.SUBMITTING), default=1)
        claimed.update(
            status_reason=f"{exc.message} Retrying.",
            next_submit_at=SUBMIT_RETRY.next_try(attempts, now),
            updated_at=now,
        )
        return "unavailable"
    claimed.update(
        status=Status.PENDING,
        submitted_at=now,
        status_reason=f"submitted as one index of {sweep.workload}",
        updated_at=now,
    )
    return "submitted"


def cancel_trials(actor: User, sweep: Sweep, reason: str = "") -> int:
    """Cancel every live trial of a workload sweep at once (inside cancel_sweep's
    transaction, the sweep row locked): queued ones end now, the others go `cancelling`,
    each with its audit event and `reason` (default: "cancelled with the sweep by <actor>");
    ONE task then deletes the Job (and with it every pod) — only while some index of it is
    still live (this call's, or one already `cancelling`). A Job whose indexes have all
    ended (a sweep extended after its Job finished: the new trials run one Job each) is
    left alone: it holds the ended trials' pod logs until its TTL.
    Trials an extension added (one Job each) are left to cancel_sweep's own loop.
    Returns how many trials it cancelled (two queries when none is live)."""
    from apps.launches.tasks import close_mlflow_run, delete_workload

    now = timezone.now()
    live = Launch.objects.filter(in_workload(), sweep=sweep, status__in=LIVE)
    trials = list(live.select_for_update().exclude(status=Status.CANCELLING).order_by("trial"))
    if not trials:
        if live.exists():  # only `cancelling` indexes left: their Job still has to go
            enqueue_on_commit(delete_workload, sweep.pk)
        return 0
    reason = reason or f"cancelled with the sweep by {actor.username}"
    for trial in trials:
        trial.updated_at = now
        before = trial.status
        if trial.status == Status.QUEUED:
            trial.status, trial.finished_at = Status.CANCELLED, now
            trial.status_reason = "cancelled before submission"
            enqueue_on_commit(close_mlflow_run, trial.pk)
        else:
            trial.status, trial.status_reason = Status.CANCELLING, reason
        record(
            actor,
            AuditVerb.LAUNCH_CANCELLED,
            trial,
            team=sweep.project.team,
            project=sweep.project,
            before={"status": before},
            after={"status": trial.status},
        )
    Launch.objects.bulk_update(trials, ["status", "status_reason", "finished_at", "updated_at"])
    enqueue_on_commit(delete_workload, sweep.pk)
    return len(trials)


def delete(sweep_pk: int) -> None:
    """Delete the cancelled sweep's Job and ConfigMap, then fold what the cluster shows into
    its trials (the Job gone → `cancelling` trials end `cancelled`, MLflow runs KILLED).
    Nothing happens when no index of the Job is live any more: an ended Job stays for its
    trials' logs until its TTL. Raises BackendUnavailable (the task retries; the
    reconciler also asks again)."""
    sweep = Sweep.objects.select_related("project__team").filter(pk=sweep_pk).first()
    if sweep is None or not sweep.workload:
        return
    live = list(
        Launch.objects.select_related("project__team", "template").filter(in_workload(), sweep=sweep, status__in=LIVE)
    )
    if not live:
        return
    backend = get_backend(sweep.project.backend)
    backend.delete_workload(sweep)
    from apps.launches.tasks import sync_many

    sync_many(live)


def release(sweep_pk: int) -> None:
    """The sweep ended: delete its ConfigMap (the Job and its pods stay for the trials'
    logs until the Job's TTL). Raises BackendUnavailable (the task retries)."""
    sweep = Sweep.objects.select_related("project__team").filter(pk=sweep_pk).first()
    if sweep is None or not sweep.workload:
        return
    get_backend(sweep.project.backend).release_workload(sweep)
