"""The environment every job gets, whatever the backend."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from apps.launches.argv import build_argv, build_env

if TYPE_CHECKING:
    from apps.launches.models import Launch


def job_tracking_uri() -> str:
    """MLflow's address as jobs see it (PLINTH_JOB_MLFLOW_URI, else the portal's tracking
    URI), without any `user:password@` part: the portal's own MLflow account never reaches a
    job. Jobs that need credentials get the project's own (on Kubernetes, the namespace's
    PLINTH_KUBE_MLFLOW_SECRET)."""
    uri = settings.PLINTH_JOB_MLFLOW_URI or settings.MLFLOW_TRACKING_URI
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def job_env(launch: Launch) -> dict[str, str]:
    """The job's own variables, whatever the backend: MLflow settings so ordinary
    `mlflow.start_run()` code logs into the portal's run (MLFLOW_TRACKING_URI, MLFLOW_RUN_ID,
    MLFLOW_EXPERIMENT_ID), the launch's identity (PLINTH_LAUNCH_ID, PLINTH_PROJECT) and one
    PLINTH_PARAM_* variable per parameter. Nothing here comes from the worker's environment
    or the portal's secrets; each backend adds only what its allow-list names."""
    env = {
        "MLFLOW_TRACKING_URI": job_tracking_uri(),
        "MLFLOW_RUN_ID": launch.mlflow_run_id,
        "MLFLOW_EXPERIMENT_ID": launch.mlflow_experiment_id,
        "PLINTH_LAUNCH_ID": str(launch.pk),
        "PLINTH_PROJECT": launch.project.full_slug,
    }
    env.update(build_env(launch.parameters))
    return env


def job_argv(launch: Launch) -> list[str]:
    return build_argv(list(launch.template.command), launch.parameters)
