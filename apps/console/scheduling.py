"""When a change in Plinth must reach the cluster or MLflow: decided here, sent after commit."""

from __future__ import annotations

from django.conf import settings

from apps.core.queue import enqueue_on_commit
from apps.projects.models import Backend, Project


def cluster_sync_enabled(project: Project) -> bool:
    """Kubernetes-backed projects, when the portal is configured to manage the cluster."""
    return bool(settings.PLINTH_KUBE_ACCESS_SYNC) and project.backend == Backend.KUBERNETES


def mlflow_sync_enabled() -> bool:
    """MLflow runs its basic-auth app and Plinth holds an MLflow admin account."""
    return bool(settings.PLINTH_MLFLOW_ADMIN_USERNAME)


def needs_sync(project: Project) -> bool:
    return cluster_sync_enabled(project) or mlflow_sync_enabled()


def schedule_project_sync(project: Project) -> None:
    """Sync one project's access after the current transaction commits (if any sync is on)."""
    if needs_sync(project):
        from apps.console.tasks import sync_project_access

        enqueue_on_commit(sync_project_access, project.pk)


def schedule_team_sync(team_id: int) -> None:
    """Sync the access of every project of a team whose memberships changed."""
    if any(needs_sync(project) for project in Project.objects.filter(team_id=team_id)):
        from apps.console.tasks import sync_team_access

        enqueue_on_commit(sync_team_access, team_id)
