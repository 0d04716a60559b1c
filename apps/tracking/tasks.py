"""Celery tasks of the metric cache. All are safe to run twice and at any time: the cache
is derived data and every read re-validates it against MLflow (apps.tracking.series)."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from apps.tracking.gateway import MlflowError, MlflowUnavailable, gateway
from apps.tracking.models import MetricSeries
from apps.tracking.runs import Run
from apps.tracking.series import DEFAULT_MAX_POINTS, forget_runs, histories

logger = logging.getLogger(__name__)

PRUNE_BATCH = 100


@shared_task(acks_late=True)
def cache_run_histories(run_id: str, max_points: int = DEFAULT_MAX_POINTS) -> str:
    """Store the downsampled histories of a run that has ended, so that the first compare
    is already warm (sent when a launch ends; the first request computes them otherwise).
    A run still running is left alone; a deleted or unknown one loses its rows."""
    try:
        run = Run.from_mlflow(gateway().get_run(run_id))
    except MlflowUnavailable:
        return "unavailable"  # the periodic scan (cache_finished_runs) catches up
    except MlflowError:
        forget_runs([run_id])
        return "gone"
    if run.is_deleted:
        forget_runs([run_id])
        return "deleted"
    if not run.is_finished:
        return "running"
    try:
        found = histories([run], None, max_points)
    except MlflowUnavailable:
        return "unavailable"
    return f"{found.computed} computed, {found.cached} already cached"


SCAN_PAGE = 1000  # runs per runs/search page
SCAN_EXPERIMENTS = 100  # experiments per runs/search call


@shared_task
def cache_finished_runs(max_points: int = DEFAULT_MAX_POINTS) -> dict[str, int]:
    """Beat (every PLINTH_METRIC_CACHE_SCAN_SECONDS): compute the cut histories of runs that
    ended in the last PLINTH_METRIC_CACHE_LOOKBACK_SECONDS in the experiments of linked
    projects — runs logged by people's own scripts as well as launched ones — so that the
    first compare after a run ends is served from the cache. Rows already fresh are kept
    (no MLflow history read); a run deleted or resumed is left to the readers' checks.
    Returns counts {"runs", "computed", "cached"}; MLflow down ends the pass early (the
    lookback covers the next one)."""
    from django.conf import settings

    from apps.projects.models import ExperimentState, Project

    counts = {"runs": 0, "computed": 0, "cached": 0}
    experiment_ids = sorted(
        set(
            Project.objects.filter(mlflow_state=ExperimentState.LINKED)
            .exclude(mlflow_experiment_id="")
            .values_list("mlflow_experiment_id", flat=True)
        )
    )
    since = int((time.time() - float(settings.PLINTH_METRIC_CACHE_LOOKBACK_SECONDS)) * 1000)
    query = f"attributes.end_time >= {since}"
    try:
        for start in range(0, len(experiment_ids), SCAN_EXPERIMENTS):
            chunk = experiment_ids[start : start + SCAN_EXPERIMENTS]
            token = ""
            while True:
                try:
                    raw, token = gateway().search_runs(chunk, query, max_results=SCAN_PAGE, page_token=token)
                except MlflowError as exc:  # e.g. an experiment deleted in MLflow meanwhile
                    logger.warning("cache_finished_runs: %s", exc.message)
                    break
                runs = [run for run in map(Run.from_mlflow, raw) if run.is_finished and not run.is_deleted]
                if runs:
                    found = histories(runs, None, max_points)
                    counts["runs"] += len(runs)
                    counts["computed"] += found.computed
                    counts["cached"] += found.cached
                if not token:
                    break
    except MlflowUnavailable as exc:
        logger.warning("cache_finished_runs: %s", exc.message)
    return counts


@shared_task
def prune_metric_cache() -> dict[str, int]:
    """Beat (hourly): delete the rows of runs deleted, purged or resumed since they were
    cached. Reads never serve such rows anyway (they re-check every run); this keeps the
    table to what can still be served."""
    counts = {"runs": 0, "deleted": 0}
    pairs = MetricSeries.objects.values_list("experiment_id", "run_id").distinct().order_by("experiment_id")
    by_experiment: dict[str, list[str]] = {}
    for experiment_id, run_id in pairs:
        by_experiment.setdefault(experiment_id, []).append(run_id)
    try:
        for experiment_id, run_ids in by_experiment.items():
            for start in range(0, len(run_ids), PRUNE_BATCH):
                chunk = run_ids[start : start + PRUNE_BATCH]
                quoted = ",".join(f"'{r}'" for r in chunk if "'" not in r)
                raw, _ = gateway().search_runs(
                    [experiment_id],
                    f"attributes.run_id IN ({quoted})",
                    max_results=len(chunk),
                    run_view_type="ALL",
                )
                alive = {run.run_id: run for run in map(Run.from_mlflow, raw) if not run.is_deleted}
                counts["runs"] += len(chunk)
                gone = [r for r in chunk if r not in alive or not alive[r].is_finished]
                counts["deleted"] += forget_runs(gone)
                rows = MetricSeries.objects.filter(run_id__in=[r for r in chunk if r not in gone])
                stale = [
                    pk for pk, r, end in rows.values_list("pk", "run_id", "run_end_time") if alive[r].end_time != end
                ]
                if stale:
                    counts["deleted"] += MetricSeries.objects.filter(pk__in=stale).delete()[0]
    except MlflowUnavailable as exc:
        logger.warning("prune_metric_cache: %s", exc.message)
    return counts
