"""The environment every job gets, whatever the backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from apps.launches.argv import build_argv, build_env

if TYPE_CHECKING:
    from apps.launches.models import Launch


def job_env(launch: Launch) -> dict[str, str]:
    """MLflow settings so ordinary `mlflow.start_run()` code logs into the portal's run, the
    launch's identity, and one PLINTH_PARAM_* variable per parameter."""
    env = {
        "MLFLOW_TRACKING_URI": settings.PLINTH_JOB_MLFLOW_URI or settings.MLFLOW_TRACKING_URI,
        "MLFLOW_RUN_ID": launch.mlflow_run_id,
        "MLFLOW_EXPERIMENT_ID": launch.mlflow_experiment_id,
        "PLINTH_LAUNCH_ID": str(launch.pk),
        "PLINTH_PROJECT": launch.project.full_slug,
    }
    env.update(build_env(launch.parameters))
    return env


def job_argv(launch: Launch) -> list[str]:
    return build_argv(list(launch.template.command), launch.parameters)
