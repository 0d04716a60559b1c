"""Access sync tasks: on change (one project, one team) and the periodic reconciler."""

from __future__ import annotations

from celery import shared_task

from apps.projects.models import Project


@shared_task(acks_late=True)
def sync_project_access(project_pk: int) -> int:
    """Push one project's access to the cluster and MLflow (idempotent; safe to repeat)."""
    from apps.console.sync import sync_project

    return len(sync_project(project_pk))


@shared_task(acks_late=True)
def sync_team_access(team_pk: int) -> int:
    """After a membership change: every project of the team."""
    from apps.console.sync import sync_project

    return sum(len(sync_project(pk)) for pk in Project.objects.filter(team_id=team_pk).values_list("pk", flat=True))


@shared_task
def reconcile_access() -> int:
    """Reconciler (beat): every project whose access is synced somewhere, so drift made by
    hand and changes whose task was lost are repaired within one period."""
    from apps.console.scheduling import needs_sync
    from apps.console.sync import sync_project

    synced = 0
    for project in Project.objects.select_related("team").order_by("pk"):
        if needs_sync(project):
            synced += len(sync_project(project.pk))
    return synced
