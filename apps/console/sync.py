"""One access-sync pass for one project: the cluster, then MLflow, each recorded on its
SyncState row with an audit event for whatever it changed.

Drift vs change: when Plinth's desired state equals what the last successful pass applied
(`SyncState.applied`) yet the target differs, someone changed the target by hand: that is
drift, repaired with a `*.drift_repaired` event. Otherwise the pass carries a change made
in Plinth (a member added, a quota raised): a `*.synced` event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.compute.base import BackendRejected, BackendUnavailable
from apps.compute.k8s.rbac import AccessGateway, ObjectApi
from apps.console import cluster_sync, mlflow_sync
from apps.console.models import SyncState, SyncStatus, SyncTarget
from apps.console.scheduling import cluster_sync_enabled, mlflow_sync_enabled
from apps.core.errors import ServiceError
from apps.projects.models import ExperimentState, Project

logger = logging.getLogger(__name__)


def cluster_api() -> ObjectApi:
    """The cluster, as configured in settings (tests replace this function)."""
    return AccessGateway()


def mlflow_client() -> mlflow_sync.MlflowAuthClient:
    """MLflow's auth API as Plinth's MLflow admin (tests may replace this function)."""
    return mlflow_sync.MlflowAuthClient()


def _state(project: Project, target: str) -> SyncState:
    state, _ = SyncState.objects.get_or_create(project=project, target=target)
    return state


def _finish(
    project: Project,
    state: SyncState,
    *,
    changes: list[dict[str, str]],
    applied: dict[str, Any],
    verbs: tuple[AuditVerb, AuditVerb],
) -> SyncState:
    drift = bool(changes) and bool(state.applied) and state.applied == applied
    now = timezone.now()
    with transaction.atomic():
        state.status = SyncStatus.REPAIRED if drift else SyncStatus.IN_SYNC
        state.message = (
            f"Repaired {len(changes)} difference(s) made outside Plinth."
            if drift
            else (f"Applied {len(changes)} change(s)." if changes else "In sync.")
        )
        state.drift = changes if drift else []
        state.applied = applied
        state.checked_at = now
        if drift:
            state.repaired_at = now
        state.save()
        if changes:
            synced, repaired = verbs
            verb = repaired if drift else synced
            record(None, verb, project, team=project.team, project=project, after={"changes": changes})
    return state


def _fail(state: SyncState, message: str) -> SyncState:
    state.status = SyncStatus.ERROR
    state.message = message[:500]
    state.checked_at = timezone.now()
    state.save(update_fields=["status", "message", "checked_at"])
    return state


def sync_cluster(project: Project, api: ObjectApi | None = None) -> SyncState | None:
    """Make the project's namespace match Plinth. None when the cluster sync is off for it."""
    if not cluster_sync_enabled(project):
        return None
    state = _state(project, SyncTarget.CLUSTER)
    try:
        api = api or cluster_api()
        objects = cluster_sync.desired(project)
        changes = cluster_sync.plan(project, api, objects)
        cluster_sync.apply(project, api, changes)
    except (BackendUnavailable, BackendRejected) as exc:
        return _fail(state, str(exc))
    return _finish(
        project,
        state,
        changes=[c.as_dict() for c in changes],
        applied=cluster_sync.snapshot(objects),
        verbs=(AuditVerb.CLUSTER_SYNCED, AuditVerb.CLUSTER_DRIFT_REPAIRED),
    )


def sync_mlflow(project: Project, client: mlflow_sync.MlflowAuthClient | None = None) -> SyncState | None:
    """Make MLflow's grants on the project's experiment and models match the team. None
    when the MLflow sync is off or the project has no experiment yet."""
    if not mlflow_sync_enabled() or project.mlflow_state != ExperimentState.LINKED:
        return None
    state = _state(project, SyncTarget.MLFLOW)
    previous = list((state.applied or {}).get("users", {}))
    try:
        client = client or mlflow_client()
        result = mlflow_sync.plan(project, client, previous)
        mlflow_sync.apply(client, result)
    except ServiceError as exc:  # MlflowUnavailable, MlflowError
        return _fail(state, exc.message)
    return _finish(
        project,
        state,
        changes=[c.as_dict() for c in result.changes],
        applied={"users": result.wanted, "models": sorted(result.models)},
        verbs=(AuditVerb.MLFLOW_SYNCED, AuditVerb.MLFLOW_DRIFT_REPAIRED),
    )


def sync_project(project_pk: int) -> list[SyncState]:
    """Both syncs for one project (each records its own failure and never stops the other)."""
    project = Project.objects.select_related("team").filter(pk=project_pk).first()
    if project is None:
        return []
    states: list[SyncState] = []
    steps: list[Callable[[Project], SyncState | None]] = [sync_cluster, sync_mlflow]
    for step in steps:
        try:
            state = step(project)
        except Exception:  # one project's surprise must not stop the reconciler's pass
            logger.exception("access sync of project %s failed", project_pk)
            continue
        if state is not None:
            states.append(state)
    return states


def live_cluster_plan(project: Project, api: ObjectApi | None = None) -> list[dict[str, str]]:
    """What the next pass would change in the cluster, read now (the project page's check)."""
    changes = cluster_sync.plan(project, api or cluster_api())
    return [c.as_dict() for c in changes]
