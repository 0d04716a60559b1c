from __future__ import annotations

import contextlib

from celery import shared_task

from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowUnavailable


@shared_task(
    bind=True,
    autoretry_for=(MlflowUnavailable,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=8,
    acks_late=True,
)
def ensure_project_experiment(self: object, project_pk: int) -> None:
    """Create or attach a project's MLflow experiment; retried with backoff while MLflow is
    down. The periodic `sync_pending_experiments` picks up whatever outlives the retries."""
    from apps.projects.services import link_experiment

    link_experiment(project_pk)


@shared_task
def sync_pending_experiments() -> int:
    """Reconciler: link every project still waiting for its MLflow experiment, then check
    every link by id (services.refresh_experiment_names): renames are followed, a deleted
    experiment makes its project `deleted`, a restored one `linked` again."""
    from apps.projects.services import link_experiment, refresh_experiment_names

    linked = 0
    for pk in Project.objects.filter(mlflow_state=ExperimentState.PENDING).values_list("pk", flat=True)[:100]:
        try:
            project = link_experiment(pk)
        except MlflowUnavailable:
            return linked  # MLflow is down: try again on the next beat
        if project is not None and project.mlflow_state == ExperimentState.LINKED:
            linked += 1
    with contextlib.suppress(MlflowUnavailable):  # the next beat tries again
        refresh_experiment_names()
    return linked
