"""Which params, metrics and tags an experiment's runs have: the choices of the runs
table's column picker and the tag columns of the CSV export.

MLflow has no "list the keys of an experiment" endpoint, so the keys are collected from
runs/search over every active run of the experiment (pages of MLflow's maximum, 50,000)
(or, when `PLINTH_MLFLOW_STORE_URI` is set, with one query on MLflow's backend store)
and cached per experiment for `PLINTH_RUN_KEYS_CACHE_SECONDS` (a new key logged meanwhile
still shows at once when a run of the current page has it: callers merge the page's own
keys in). A very large experiment is scanned up to `MAX_SCANNED_RUNS` runs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from apps.projects.models import Project
from apps.tracking.gateway import MlflowError, MlflowUnavailable, gateway
from apps.tracking.runs import Run

logger = logging.getLogger(__name__)

# MLflow's runs/search answers at most this many runs a page (SEARCH_MAX_RESULTS_THRESHOLD).
SCAN_PAGE = 50_000
MAX_SCANNED_RUNS = 200_000
# MLflow's own tags worth a CSV column; the rest of `mlflow.*` (source, log-model history,
# notes, git details) is bookkeeping that would double a spreadsheet's width.
EXPORTED_SYSTEM_TAGS = ("mlflow.runName", "mlflow.user", "mlflow.parentRunId", "mlflow.source.name")


@dataclass(frozen=True)
class ExperimentKeys:
    """Sorted param, metric and tag keys of an experiment's active runs."""

    params: list[str]
    metrics: list[str]
    tags: list[str]

    def merged(self, runs: Iterable[Run]) -> ExperimentKeys:
        """These keys and those of `runs` (e.g. the page just read, newer than the cache)."""
        runs = list(runs)
        return ExperimentKeys(
            sorted({*self.params, *(k for run in runs for k in run.params)}),
            sorted({*self.metrics, *(k for run in runs for k in run.latest)}),
            sorted({*self.tags, *(k for run in runs for k in run.tags)}),
        )


def _cache_key(experiment_id: str) -> str:
    # Per tracking server too: experiment ids are only unique within one MLflow.
    server = hashlib.sha256(settings.MLFLOW_TRACKING_URI.encode()).hexdigest()[:16]
    return f"plinth:tracking:keys:{server}:{experiment_id}"


def scan_keys(experiment_id: str) -> ExperimentKeys:
    """Read the keys of every active run of `experiment_id` from MLflow (no cache).

    Raises MlflowUnavailable when MLflow is down, MlflowError when it refuses."""
    params: set[str] = set()
    metrics: set[str] = set()
    tags: set[str] = set()
    token, scanned = "", 0
    while True:
        raw, token = gateway().search_runs([experiment_id], "", max_results=SCAN_PAGE, page_token=token)
        for found in raw:
            data = found.get("data", {})
            params.update(p["key"] for p in data.get("params", []))
            metrics.update(m["key"] for m in data.get("metrics", []))
            tags.update(t["key"] for t in data.get("tags", []))
        scanned += len(raw)
        if not token or scanned >= MAX_SCANNED_RUNS:
            break
    return ExperimentKeys(sorted(params), sorted(metrics), sorted(tags))


# The same keys straight from MLflow's backend store (schema as pinned: runs, params,
# latest_metrics, tags keyed by run_uuid), one query, when PLINTH_MLFLOW_STORE_URI is set.
STORE_KEYS_SQL = """
SELECT 'p', p.key FROM params p JOIN runs r ON r.run_uuid = p.run_uuid
  WHERE r.experiment_id = :experiment AND r.lifecycle_stage = 'active' GROUP BY p.key
UNION ALL
SELECT 'm', m.key FROM latest_metrics m JOIN runs r ON r.run_uuid = m.run_uuid
  WHERE r.experiment_id = :experiment AND r.lifecycle_stage = 'active' GROUP BY m.key
UNION ALL
SELECT 't', t.key FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid
  WHERE r.experiment_id = :experiment AND r.lifecycle_stage = 'active' GROUP BY t.key
"""


def store_keys(experiment_id: str) -> ExperimentKeys | None:
    """The keys read from MLflow's backend store (apps.tracking.store), or None when no
    store URL is set or the store cannot be read (the caller asks the REST API)."""
    from apps.tracking import store

    if not store.enabled() or not experiment_id.isdigit():
        return None
    try:
        rows = store._query(STORE_KEYS_SQL, {"experiment": int(experiment_id)}, ())
    except store.StoreUnavailable:
        return None
    found: dict[str, set[str]] = {"p": set(), "m": set(), "t": set()}
    for kind, key in rows:
        found[str(kind)].add(str(key))
    return ExperimentKeys(sorted(found["p"]), sorted(found["m"]), sorted(found["t"]))


def experiment_keys(project: Project, page_runs: Iterable[Run] = ()) -> ExperimentKeys:
    """The param, metric and tag keys of `project`'s experiment (every active run, cached
    for `PLINTH_RUN_KEYS_CACHE_SECONDS`), merged with those of `page_runs`.

    Never raises for MLflow's sake: when MLflow cannot answer the scan, the keys of
    `page_runs` alone are returned (the page that asked has its runs already)."""
    experiment_id = project.mlflow_experiment_id
    if not experiment_id:
        return ExperimentKeys([], [], []).merged(page_runs)
    seconds = int(settings.PLINTH_RUN_KEYS_CACHE_SECONDS)
    keys: ExperimentKeys | None = cache.get(_cache_key(experiment_id)) if seconds > 0 else None
    if keys is None:
        keys = store_keys(experiment_id)
    if keys is None:
        try:
            keys = scan_keys(experiment_id)
        except (MlflowError, MlflowUnavailable) as exc:
            logger.warning("keys of experiment %s not read: %s", experiment_id, exc.message)
            return ExperimentKeys([], [], []).merged(page_runs)
        if seconds > 0:
            cache.set(_cache_key(experiment_id), keys, seconds)
    return keys.merged(page_runs)


def forget_keys(experiment_id: str) -> None:
    """Drop the cached keys of an experiment (the next page reads them again)."""
    cache.delete(_cache_key(experiment_id))


def export_tag_keys(runs: Iterable[Run]) -> list[str]:
    """The tag keys a CSV export of `runs` gets a `tag.<key>` column for: every tag a run
    has, except MLflow's internal `mlflow.*` ones other than EXPORTED_SYSTEM_TAGS (run
    name, user, parent run, source)."""
    return sorted(
        {key for run in runs for key in run.tags if not key.startswith("mlflow.") or key in EXPORTED_SYSTEM_TAGS}
    )
