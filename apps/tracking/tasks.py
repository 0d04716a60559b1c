"""Celery tasks of the metric cache. Both are safe to run twice and at any time: the cache
is derived data and every read re-validates it against MLflow (apps.tracking.series)."""

from __future__ import annotations

import logging

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
    except MlflowError:
        forget_runs([run_id])
        return "gone"
    if run.is_deleted:
        forget_runs([run_id])
        return "deleted"
    if not run.is_finished:
        return "running"
    found = histories([run], None, max_points)
    return f"{found.computed} computed, {found.cached} already cached"


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
