"""What a sweep's search found: the optimisation history (the objective of every ended trial
and the best so far), which parameters mattered (Optuna's parameter importances) and what
early stopping saved.

Everything here is read from the trials' rows and one MLflow search (the objective values,
`apps.launches.charts.trial_metrics`), as the sweep page and the API already have them: no
query or MLflow call per trial. Real data is messy: a trial whose objective is missing, NaN
or ±inf (MLflow's ±1.797e308 sentinels included) is never a best value, is never plotted as a
number and never breaks a figure; the page says how many such trials there are.

Importances use Optuna's mean-decrease-impurity evaluator (a random forest fitted to the
completed trials, the importance of a parameter being its share of the forest's impurity
decrease). Optuna's default, fANOVA, fits the same kind of forest and then integrates over
it: seconds at a hundred trials and tens of seconds at a thousand, on a page that polls every
few seconds. The result is cached by what it is computed from, so a poll that brings no new
completed trial computes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from django.core.cache import cache

from apps.core.chart_text import chart_text
from apps.core.numbers import is_finite, normalise
from apps.launches.models import Launch, Status, Sweep
from apps.launches.optimizer import ObjectiveState, study_for

logger = logging.getLogger(__name__)

# Fewer completed trials than this give a forest of noise: the page says how many are needed.
MIN_TRIALS_FOR_IMPORTANCE = 5
IMPORTANCE_CACHE_SECONDS = 24 * 3600
IMPORTANCE_SEED = 0  # the forest's seed: the same trials give the same shares on every poll

CHART_HEIGHT = 380  # px: the height of the page's chart boxes (.chart), so none leaves a gap
COMPLETED_COLOUR = "#1f77b4"
BEST_COLOUR = "#d62728"
PRUNED_COLOUR = "#98a2b3"


@dataclass(frozen=True)
class HistoryPoint:
    """One ended trial in the optimisation history. `trial`: its number (1-based, as its
    name says: "trial 3"); `status`: the launch status; `value`: its objective as last
    logged (normalised: NaN and ±inf stay what they are; None when never logged; for a
    pruned trial the last value before it was stopped); `best`: the best finite objective of
    the completed trials up to this trial number (None until one exists)."""

    trial: int
    launch: Launch
    status: str
    value: float | None
    best: float | None

    @property
    def counts(self) -> bool:
        """Whether the optimiser counts this trial's value: completed with a finite objective."""
        return self.status == Status.SUCCEEDED and is_finite(self.value)


@dataclass(frozen=True)
class Importances:
    """Parameter importances: `shares` {parameter: share of the importance, 0..1, summing to
    1}, largest first; empty with `message` (the sentence the page shows) when they cannot be
    computed (too few completed trials, fewer than two parameters varying, odd data)."""

    shares: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Savings:
    """What pruning saved. `pruned`: how many trials were pruned; `uses_gpus`: whether the
    sweep's trials hold GPUs; `gpu_hours` (GPU sweeps) and `hours` (run time, any sweep): the
    estimate, None while no trial has completed to compare with."""

    pruned: int
    uses_gpus: bool
    hours: float | None
    gpu_hours: float | None


@dataclass(frozen=True)
class Insights:
    """Everything the sweep page's insight section and `GET /api/v1/sweeps/{id}/insights/`
    show (see `sweep_insights`)."""

    history: list[HistoryPoint]
    history_note: str
    importances: Importances
    savings: Savings


def trial_numbers(trials: list[Launch]) -> dict[int, int]:
    """{launch pk: trial number}: the planned index + 1 (what the trial's name says), or the
    trial's place in creation order for a launch recorded without an index."""
    ordered = sorted(trials, key=lambda t: t.pk)
    return {t.pk: (t.trial + 1 if t.trial is not None else place) for place, t in enumerate(ordered, start=1)}


def _logged(sweep: Sweep, metrics: dict[int, dict[str, float]], launch: Launch) -> float | None:
    """The objective's last value in MLflow (normalised), None when never logged or not a number."""
    value = metrics.get(launch.pk, {}).get(sweep.metric)
    if value is None:
        return None
    try:
        return normalise(value)
    except (TypeError, ValueError):
        return None


def _last_of_curve(launch: Launch) -> float | None:
    """The last value of the trial's stored objective curve ({"step": value}), None if empty."""
    try:
        steps = sorted((int(step), value) for step, value in (launch.objective_curve or {}).items())
        return normalise(steps[-1][1]) if steps else None
    except (TypeError, ValueError):
        return None


def objective_of(sweep: Sweep, metrics: dict[int, dict[str, float]], launch: Launch) -> float | None:
    """A trial's objective as the page shows it (normalised; NaN and ±inf kept; None when
    never logged). The optimiser's reading where it made one (`Launch.objective_state`: a
    finite value, missing, or NaN/inf); for a pruned trial, the last value of its curve (what
    the pruner judged); otherwise (not read yet) the last value MLflow holds."""
    state = launch.objective_state
    if launch.status == Status.PRUNED:
        last = _last_of_curve(launch)
        return last if last is not None else _logged(sweep, metrics, launch)
    if state == ObjectiveState.OK and launch.objective is not None:
        return float(launch.objective)
    if state == ObjectiveState.MISSING:
        return None
    logged = _logged(sweep, metrics, launch)
    if state == ObjectiveState.INVALID:
        return logged if logged is not None and not is_finite(logged) else math.nan
    return logged


def history(sweep: Sweep, trials: list[Launch], metrics: dict[int, dict[str, float]]) -> list[HistoryPoint]:
    """Every ended trial (completed, pruned, failed, cancelled) by trial number, with its
    objective and the best so far: the best finite objective among the completed trials up
    to it, for the sweep's direction ("min" or "max"). Pruned trials never count as best: their
    last value is from the middle of a run. Empty when the sweep has no objective metric."""
    if not sweep.metric:
        return []
    numbers = trial_numbers(trials)
    ended = sorted((t for t in trials if t.is_terminal), key=lambda t: (numbers[t.pk], t.pk))
    points: list[HistoryPoint] = []
    best: float | None = None
    for launch in ended:
        value = objective_of(sweep, metrics, launch)
        if launch.status == Status.SUCCEEDED and value is not None and is_finite(value):
            best = value if best is None else min(best, value) if sweep.direction == "min" else max(best, value)
        points.append(HistoryPoint(numbers[launch.pk], launch, launch.status, value, best))
    return points


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def history_note(sweep: Sweep, points: list[HistoryPoint], running: int) -> str:
    """The sentence under the history chart naming the trials it does not plot: failed or
    cancelled ones, completed or pruned ones whose objective is missing, NaN or ±inf, and
    those still running ("" when every trial is plotted)."""
    stopped = sum(1 for p in points if p.status in (Status.FAILED, Status.CANCELLED))
    nonfinite = sum(
        1
        for p in points
        if p.status in (Status.SUCCEEDED, Status.PRUNED) and p.value is not None and not is_finite(p.value)
    )
    missing = sum(1 for p in points if p.status in (Status.SUCCEEDED, Status.PRUNED) and p.value is None)
    parts = []
    if stopped:
        parts.append(f"{_plural(stopped, 'trial')} failed or cancelled")
    if nonfinite:
        parts.append(f"{_plural(nonfinite, 'trial')} logged NaN or inf")
    if missing:
        parts.append(f"{_plural(missing, 'trial')} never logged {sweep.metric}")
    if running:
        parts.append(f"{_plural(running, 'trial')} still running")
    return f"Not plotted: {'; '.join(parts)}." if parts else ""


def history_figure(sweep: Sweep, points: list[HistoryPoint]) -> dict[str, Any] | None:
    """A Plotly figure {data, layout}: completed trials' objectives as points by trial number,
    the best so far as a step line, pruned trials as grey crosses at the last value they
    logged (they do not count as best). Trials without a finite value are left out
    (`history_note` names them). None when nothing can be plotted."""
    completed = [p for p in points if p.counts]
    pruned = [p for p in points if p.status == Status.PRUNED and is_finite(p.value)]
    if not completed and not pruned:
        return None
    metric = chart_text(sweep.metric)
    data: list[dict[str, Any]] = []
    if completed:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "completed trial",
                "x": [p.trial for p in completed],
                "y": [p.value for p in completed],
                "marker": {"color": COMPLETED_COLOUR, "size": 8},
                "hovertemplate": f"trial %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
            }
        )
    if pruned:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "pruned (last value logged)",
                "x": [p.trial for p in pruned],
                "y": [p.value for p in pruned],
                "marker": {"color": PRUNED_COLOUR, "size": 9, "symbol": "x"},
                "hovertemplate": f"trial %{{x}} pruned<br>{metric} %{{y:.4g}} when stopped<extra></extra>",
            }
        )
    best_points = [p for p in points if p.best is not None and p.status == Status.SUCCEEDED]
    if best_points:
        # The line runs on to the last ended trial, so a flat tail shows trials that did not improve.
        xs = [p.trial for p in best_points] + [points[-1].trial]
        ys = [p.best for p in best_points] + [best_points[-1].best]
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"best so far ({sweep.direction})",
                "x": xs,
                "y": ys,
                "line": {"color": BEST_COLOUR, "shape": "hv", "width": 2},
                "hovertemplate": f"best {metric} %{{y:.4g}} by trial %{{x}}<extra></extra>",
            }
        )
    return {
        "data": data,
        "layout": {
            "height": CHART_HEIGHT,
            "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
            "xaxis": {"title": {"text": "trial"}, "rangemode": "tozero", "tickformat": "d"},
            "yaxis": {"title": {"text": metric}},
            "legend": {"orientation": "h", "y": -0.25},
        },
    }


# --- parameter importances ------------------------------------------------------------------
def _completed_for_importance(
    sweep: Sweep, trials: list[Launch], metrics: dict[int, dict[str, float]]
) -> list[tuple[Launch, float]]:
    """The completed trials with a finite objective, as the optimiser's study counts them
    (`Launch.objective`): a completed trial whose objective the optimiser has not read yet
    takes MLflow's last value, on a copy (the row is not changed). Only trials with a
    planned index and a value for every searched parameter: the study is built from those."""
    found = []
    for launch in trials:
        if launch.status != Status.SUCCEEDED or launch.trial is None:
            continue
        value = objective_of(sweep, metrics, launch)
        if value is None or not is_finite(value) or any(name not in launch.parameters for name in sweep.space):
            continue
        if launch.objective_state != ObjectiveState.OK:
            launch = copy.copy(launch)
            launch.objective, launch.objective_state = value, ObjectiveState.OK
        found.append((launch, value))
    return found


def _varying(sweep: Sweep, completed: list[tuple[Launch, float]]) -> list[str]:
    """The searched parameters that took more than one value among `completed`."""
    names = []
    for name in sweep.space:
        values = {json.dumps(launch.parameters[name], sort_keys=True) for launch, _ in completed}
        if len(values) > 1:
            names.append(name)
    return names


def _cache_key(sweep: Sweep, completed: list[tuple[Launch, float]]) -> str:
    """What the importances are computed from: the completed trials' parameters and values
    (a poll that brings no new completed trial, or the same values again, hits the cache)."""
    rows = sorted((launch.pk, launch.parameters, value) for launch, value in completed)
    digest = hashlib.sha256(json.dumps([sweep.direction, rows], sort_keys=True, default=str).encode()).hexdigest()
    return f"plinth:sweep-importances:{sweep.pk}:{len(completed)}:{digest[:32]}"


def _compute_importances(sweep: Sweep, launches: list[Launch], varying: list[str]) -> dict[str, float]:
    """Optuna's importances over the study of `launches` (the completed trials), largest
    first, of the `varying` parameters only (one that kept a single value explains nothing
    and is not listed at 0 %). Raises whatever Optuna raises on data it cannot use."""
    study = study_for(sweep, launches)
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=IMPORTANCE_SEED)
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    shares = {str(name): float(share) for name, share in found.items() if name in sweep.space and name in varying}
    total = sum(shares.values())
    if not shares or not math.isfinite(total) or total <= 0:
        raise ValueError("no parameter explains any of the objective's variation")
    return {name: share / total for name, share in sorted(shares.items(), key=lambda kv: -kv[1])}


def importances(sweep: Sweep, trials: list[Launch], metrics: dict[int, dict[str, float]]) -> Importances:
    """Which searched parameters decided the objective, as shares of 1 (see the module's
    docstring for the evaluator), over the completed trials with a finite objective. An
    empty result says why: no objective metric, fewer than MIN_TRIALS_FOR_IMPORTANCE such
    trials (and how many there are), fewer than two parameters varying, or data Optuna could
    not use (logged as one line). Cached by the trials and values it is computed from."""
    if not sweep.metric:
        return Importances(message="The sweep has no objective metric to explain.")
    completed = _completed_for_importance(sweep, trials, metrics)
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE:
        return Importances(
            message=f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"with a finite {sweep.metric}; {len(completed)} so far."
        )
    varying = _varying(sweep, completed)
    if len(varying) < 2:
        what = f"Only {varying[0]} varied" if varying else "No parameter varied"
        return Importances(
            message=f"{what} among the completed trials: importances compare two or more parameters that vary."
        )
    key = _cache_key(sweep, completed)
    try:
        cached = cache.get(key)
    except Exception:  # the cache is down (Redis): compute, as on a miss
        cached = None
    if isinstance(cached, dict):
        return Importances(shares=cached)
    try:
        shares = _compute_importances(sweep, [launch for launch, _ in completed], varying)
    except Exception as exc:  # a page never fails on numbers Optuna cannot use
        logger.info("importances of sweep %s not computed: %s: %s", sweep.pk, type(exc).__name__, exc)
        return Importances(message=f"Parameter importances could not be computed from these trials ({exc}).")
    with contextlib.suppress(Exception):  # a cache that is down costs a recomputation, not the page
        cache.set(key, shares, IMPORTANCE_CACHE_SECONDS)
    return Importances(shares=shares)


def importance_figure(found: Importances) -> dict[str, Any] | None:
    """A horizontal bar per parameter (its share, in %), the most important at the top;
    None when there are no importances."""
    if not found.shares:
        return None
    names = list(found.shares)[::-1]  # Plotly draws the first bar at the bottom
    percents = [round(100 * found.shares[name], 1) for name in names]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": percents,
                "y": [chart_text(name) for name in names],
                "text": [f"{p:.0f} %" for p in percents],
                "textposition": "outside",
                "cliponaxis": False,
                "marker": {"color": COMPLETED_COLOUR},
                "hovertemplate": "%{y}: %{x:.1f} % of the importance<extra></extra>",
            }
        ],
        "layout": {
            "height": max(CHART_HEIGHT, 80 + 32 * len(names)),
            "bargap": 0.4,
            "margin": {"l": 120, "r": 40, "t": 10, "b": 50},
            "xaxis": {"title": {"text": "share of importance (%)"}, "range": [0, 100]},
            "yaxis": {"automargin": True, "type": "category"},
        },
    }


# --- what pruning saved ---------------------------------------------------------------------
def _runtime(launch: Launch) -> float | None:
    """Seconds the trial ran (started → finished), None if it never started or has not ended."""
    if launch.started_at is None or launch.finished_at is None:
        return None
    return max(0.0, (launch.finished_at - launch.started_at).total_seconds())


def savings(sweep: Sweep, trials: list[Launch]) -> Savings:
    """What pruning saved, estimated per pruned trial as the median run time of the
    completed trials minus its own run time, floored at 0 (a trial pruned late saves
    nothing, never a negative), in hours; times its GPUs for `gpu_hours`. None while no trial
    has completed (there is nothing to compare with). A pruned trial that never started
    counts as having run 0 seconds."""
    pruned = [t for t in trials if t.status == Status.PRUNED]
    uses_gpus = any(t.gpus > 0 for t in trials) or _int(sweep.resources.get("gpus")) > 0
    completed = [r for t in trials if t.status == Status.SUCCEEDED and (r := _runtime(t)) is not None]
    if not completed:
        return Savings(len(pruned), uses_gpus, None, None)
    median = statistics.median(completed)
    seconds = [max(0.0, median - (_runtime(t) or 0.0)) for t in pruned]
    hours = sum(seconds) / 3600
    gpu_hours = sum(s * t.gpus for s, t in zip(seconds, pruned, strict=True)) / 3600
    return Savings(len(pruned), uses_gpus, hours, gpu_hours if uses_gpus else None)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def sweep_insights(
    sweep: Sweep, trials: list[Launch], metrics: dict[int, dict[str, float]], *, running: int = 0
) -> Insights:
    """The history, importances and savings of `sweep` from its `trials` (every trial, any
    status) and `metrics` ({launch pk: {metric: last value}}, as trial_metrics returns them);
    `running` is how many trials have not ended (for the history's note)."""
    points = history(sweep, trials, metrics)
    return Insights(
        history=points,
        history_note=history_note(sweep, points, running),
        importances=importances(sweep, trials, metrics),
        savings=savings(sweep, trials),
    )


def insights_data(found: Insights) -> dict[str, Any]:
    """The API's shape: {history: [{trial, launch, status, value, best}], importances:
    {param: share}, importances_note, pruned, gpu_hours_saved, hours_saved}. Values are
    floats (NaN/±inf become "NaN"/"Infinity"/"-Infinity" in the API's JSON) or null."""
    return {
        "history": [
            {"trial": p.trial, "launch": p.launch.pk, "status": p.status, "value": p.value, "best": p.best}
            for p in found.history
        ],
        "history_note": found.history_note,
        "importances": found.importances.shares,
        "importances_note": found.importances.message,
        "pruned": found.savings.pruned,
        "gpu_hours_saved": _rounded(found.savings.gpu_hours),
        "hours_saved": _rounded(found.savings.hours),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
