"""A sweep's objective, read from MLflow, and early stopping with Optuna's pruners.

The training script logs its metric per step with plain MLflow calls (nothing Plinth
specific); the reconciler reads each running trial's step-wise history of the sweep's
metric, keeps it on the trial's row (`Launch.objective_curve`), and asks the sweep's pruner
(median, ASHA or Hyperband; apps.launches.optimizer.pruner_for) about it. A trial to prune
is cancelled through the normal cancel path and ends `pruned` with the pruner's reason
(services.prune_launch). When a trial ends, its final objective is read once
(`record_objective`): a missing, NaN or infinite one counts as failed for the optimiser and
the trial's row says so; a metric no trial has ever logged fails the sweep, naming it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from apps.launches import optimizer, services
from apps.launches.models import TERMINAL, Launch, Status, Sweep, SweepStatus
from apps.launches.optimizer import ObjectiveState
from apps.tracking.gateway import HISTORY_BULK_LIMIT, MlflowError, MlflowUnavailable, gateway

logger = logging.getLogger(__name__)

MAX_CURVE_POINTS = 1000  # steps kept per trial (a longer curve keeps every k-th step)
BULK_RUNS = 20  # runs per history request
READ = (ObjectiveState.OK, ObjectiveState.INVALID)  # a trial whose objective was read (logged)
STRIDES = (1, 2, 5)


def uses_objective(sweep: Sweep) -> bool:
    """Whether the sweep reads its trials' objective: an adaptive strategy or early stopping."""
    return bool(sweep.metric) and (sweep.strategy in optimizer.ADAPTIVE or bool(sweep.early_stopping))


def _stride(last_step: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that keeps at most MAX_CURVE_POINTS steps:
    the same steps for every trial of the same length, so a pruner finds them to compare."""
    scale = 1
    while True:
        for base in STRIDES:
            if last_step // (base * scale) < MAX_CURVE_POINTS:
                return base * scale
        scale *= 10


def curve_from_points(points: Iterable[dict[str, Any]]) -> tuple[dict[str, float | None], float | None, bool]:
    """MLflow history points ({step, timestamp, value}) → (the curve {"step": value}, the
    last value (highest step, then latest timestamp), whether any point exists). A step
    logged twice keeps its latest value; NaN and ±inf are None in the curve (JSON has
    neither) and as they are in the last value."""
    latest: dict[int, tuple[int, float]] = {}
    for point in points:
        step, stamp, value = int(point.get("step") or 0), int(point.get("timestamp") or 0), float(point["value"])
        if step not in latest or stamp >= latest[step][0]:
            latest[step] = (stamp, value)
    if not latest:
        return {}, None, False
    last_step = max(latest)
    stride = _stride(last_step)
    # JSON (and PostgreSQL's jsonb) has no NaN or inf: a step that was not finite is null.
    curve = {str(step): _json_number(latest[step][1]) for step in sorted(latest) if step % stride == 0}
    return curve, latest[last_step][1], True


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _history(run_id: str, metric: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    token = ""
    while True:
        page, token = gateway().get_metric_history(run_id, metric, page_token=token)
        points.extend(page)
        if not token:
            return points


def record_objective(launch: Launch) -> None:
    """Read an ended trial's objective and curve from MLflow onto its row (once; a no-op
    for a trial already read, live, or whose sweep reads no objective). A succeeded trial
    whose objective is missing, NaN or inf gets a status reason saying it counts as failed
    for the optimiser; if no trial of the sweep ever logged the metric, the sweep fails
    naming it (not for a run MLflow refuses to read: one deleted there proves nothing about
    what the template logs). MlflowUnavailable propagates (the reconciler reads it on a
    later pass)."""
    sweep = launch.sweep
    if sweep is None or not uses_objective(sweep) or launch.status not in TERMINAL:
        return
    if launch.objective_state != ObjectiveState.UNREAD or not launch.mlflow_run_id:
        return
    try:
        curve, last, logged = curve_from_points(_history(launch.mlflow_run_id, sweep.metric))
    except MlflowUnavailable:
        raise
    except MlflowError as exc:  # the run was deleted in MLflow: nothing to read, ever
        logger.info("objective of %s not read: %s", launch.job_name, exc.message)
        curve, last, logged, gone = {}, None, False, True
    else:
        gone = False
    state = ObjectiveState.OK if optimizer.is_finite(last) else ObjectiveState.INVALID
    if not logged:
        state = ObjectiveState.MISSING
    fields: dict[str, Any] = {
        "objective": last if state == ObjectiveState.OK else None,
        "objective_state": state,
        "objective_curve": curve or launch.objective_curve,
    }
    if launch.status == Status.SUCCEEDED and state != ObjectiveState.OK:
        said = "never logged" if state == ObjectiveState.MISSING else f"ended at {last}"
        if gone:
            said = "could not be read (its MLflow run is gone)"
        fields["status_reason"] = (
            f"{launch.status_reason + '; ' if launch.status_reason else ''}its objective {sweep.metric} "
            f"{said}: counted as failed by the optimiser"
        )
    Launch.objects.filter(pk=launch.pk, objective_state=ObjectiveState.UNREAD).update(**fields)
    for key, value in fields.items():
        setattr(launch, key, value)
    if launch.status == Status.SUCCEEDED and state == ObjectiveState.MISSING and not gone:
        # (A run deleted in MLflow says nothing about what the template logs.)
        _fail_if_never_logged(sweep, launch)
    elif launch.status == Status.SUCCEEDED and logged:
        _note_if_pruning_cannot_act(sweep, launch)


CANNOT_ACT = "Early stopping cannot act:"


def cannot_act_note(metric: str, curve: dict[str, float | None], min_steps: int) -> str:
    """The sweep's note when a finished trial's curve of `metric` (`Launch.objective_curve`:
    {"step": value}) shows early stopping can never stop a trial: one point only, or a last
    step below `min_steps` (the pruner skips a trial until it logged that step). "" when the
    curve is long enough (or empty: nothing to judge)."""
    steps = sorted(int(step) for step in curve)
    if not steps:
        return ""
    if len(steps) == 1:
        logged, advice = "was logged at 1 step", "Choose a metric the template logs at every step."
    elif steps[-1] < min_steps:
        logged = f"was logged up to step {steps[-1]} only"
        advice = f"Lower min_steps below {steps[-1]}, or have the trials run more steps."
    else:
        return ""
    return f"{CANNOT_ACT} {metric!r} {logged} (min_steps {min_steps}), so no trial is stopped early. {advice}"


def _note_if_pruning_cannot_act(sweep: Sweep, launch: Launch) -> None:
    """Say on the sweep (its `status_reason`, shown on its page) that early stopping cannot
    act, judged from the first trial to finish with its objective read; once per sweep."""
    if not sweep.early_stopping:
        return
    note = cannot_act_note(sweep.metric, launch.objective_curve or {}, int(sweep.early_stopping.get("min_steps", 1)))
    read_before = (
        Launch.objects.filter(sweep=sweep, status=Status.SUCCEEDED, objective_state__in=READ)
        .exclude(pk=launch.pk)
        .exists()
    )
    if not note or read_before:
        return
    with transaction.atomic():
        locked = Sweep.objects.select_for_update(of=("self",)).get(pk=sweep.pk)
        if CANNOT_ACT in locked.status_reason:
            return
        locked.status_reason = f"{locked.status_reason} {note}".strip()
        locked.save(update_fields=["status_reason"])
    sweep.status_reason = locked.status_reason


def _fail_if_never_logged(sweep: Sweep, launch: Launch) -> None:
    others = Launch.objects.filter(sweep=sweep, objective_state__in=READ)
    if others.exists():
        return  # logged by other trials: this one just missed it
    try:
        run = gateway().get_run(launch.mlflow_run_id)
        keys = sorted({m["key"] for m in run.get("data", {}).get("metrics", [])})
    except MlflowError:
        keys = []
    logs = f"it logs {', '.join(keys)}" if keys else "it logs no metric at all"
    from apps.launches.sweeps import fail_sweep

    fail_sweep(
        sweep.pk,
        f"The objective {sweep.metric!r} is never logged: trial {(launch.trial or 0) + 1} succeeded without it "
        f"({logs}). Name a metric the template logs.",
    )


def record_objectives(sweep: Sweep) -> int:
    """`record_objective` for every ended trial of `sweep` not read yet (a crash or MLflow
    outage left them); returns how many were read. MlflowUnavailable propagates."""
    unread = (
        Launch.objects.select_related("sweep")
        .filter(sweep=sweep, status__in=TERMINAL, objective_state=ObjectiveState.UNREAD)
        .exclude(mlflow_run_id="")  # no run (cancelled before one was made): nothing to read, ever
    )
    count = 0
    for launch in unread:
        record_objective(launch)
        count += 1
    return count


def refresh_curves(sweep: Sweep, running: list[Launch]) -> None:
    """Read the running trials' histories of the sweep's metric (BULK_RUNS runs a request)
    onto their rows. A bulk answer cut short at MLflow's limit (HISTORY_BULK_LIMIT points,
    ordered by run) may hold the last run only in part and the later ones not at all: those
    are read alone, page by page. A bulk request MLflow refuses (a run of the chunk deleted)
    reads each run alone, and a run MLflow refuses keeps the curve it had.
    MlflowUnavailable propagates."""
    by_run = {t.mlflow_run_id: t for t in running if t.mlflow_run_id}
    run_ids = list(by_run)
    for start in range(0, len(run_ids), BULK_RUNS):
        chunk = run_ids[start : start + BULK_RUNS]
        grouped: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in chunk}
        alone: list[str] = []
        try:
            points = gateway().get_history_bulk(chunk, sweep.metric)
        except MlflowUnavailable:
            raise
        except MlflowError as exc:
            logger.info("bulk history of sweep %s refused, reading runs alone: %s", sweep.pk, exc.message)
            points, alone = [], list(chunk)
        for point in points:
            grouped.setdefault(point.get("run_id", ""), []).append(point)
        if len(points) >= HISTORY_BULK_LIMIT:
            last = points[-1].get("run_id", "")
            alone = [run_id for run_id in chunk if run_id == last or not grouped[run_id]]
        for run_id in alone:
            try:
                grouped[run_id] = _history(run_id, sweep.metric)
            except MlflowUnavailable:
                raise
            except MlflowError as exc:  # deleted in MLflow: keep what was read before
                logger.info("history of %s not read: %s", run_id, exc.message)
                grouped[run_id] = []
        for run_id in chunk:
            if not grouped[run_id] and run_id in alone:
                continue
            curve, _, _ = curve_from_points(grouped[run_id])
            launch = by_run[run_id]
            if curve != launch.objective_curve:
                Launch.objects.filter(pk=launch.pk).update(objective_curve=curve)
                launch.objective_curve = curve


def median_compared(study: Any, trial: Any) -> tuple[int, float, float]:
    """What Optuna's MedianPruner compares for `trial` (a FrozenTrial with a last step) in
    `study`: (its last step, the trial's best intermediate value over all its steps so far
    — lowest when minimising, highest when maximising, NaN ignored —, the median of the
    completed trials' values at that step, NaN ignored; NaN when none has that step). The
    same numbers as optuna/pruners/_percentile.py, so the reason quotes what decided."""
    import numpy as np
    import optuna

    step = trial.last_step
    values = np.asarray(list(trial.intermediate_values.values()), dtype=float)
    minimise = study.direction == optuna.study.StudyDirection.MINIMIZE
    with warnings.catch_warnings():  # all-NaN slices: NaN, which is the answer here
        warnings.simplefilter("ignore", RuntimeWarning)
        best = float(np.nanmin(values) if minimise else np.nanmax(values))
        at_step = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if step in t.intermediate_values
        ]
        median = float(np.nanpercentile(np.asarray(at_step, dtype=float), 50)) if at_step else math.nan
    return step, best, median


def _median_reason(study: Any, trial: Any) -> str:
    step, best, median = median_compared(study, trial)
    if math.isnan(median):
        return f"at step {step} the best value of this trial was {best:.4g}"
    return f"median of completed trials at step {step} was {median:.4g}, best so far of this trial {best:.4g}"


def prune_reason(sweep: Sweep, study: Any, trial: Any) -> str:
    """Why the pruner stops `trial` (an Optuna FrozenTrial), in words for the trial's
    status reason and the MLflow tag."""
    step = trial.last_step
    value = trial.intermediate_values[step]
    kind = sweep.early_stopping.get("type")
    if not math.isfinite(value):
        return f"{sweep.metric} was {value} at step {step}"
    if kind == "median":
        return _median_reason(study, trial)
    factor = int(sweep.early_stopping.get("reduction_factor", 3))
    name = "ASHA" if kind == "asha" else "Hyperband"
    return (
        f"{name}: at step {step} this trial's {sweep.metric} {value:.4g} was not in the best 1/{factor} "
        "of the trials that reached that rung"
    )


def prune_sweep(sweep_pk: int) -> list[int]:
    """One early-stopping pass over a running sweep: read its running trials' curves,
    rebuild its study, ask the pruner about each, prune those it stops (never one that has
    not logged step `min_steps` yet; one whose latest value is NaN or infinite is stopped at
    once after that). Returns the pruned launches' ids. MlflowUnavailable propagates
    (nothing is pruned on stale data)."""
    sweep = Sweep.objects.select_related("project__team", "template").filter(pk=sweep_pk).first()
    if sweep is None or sweep.status != SweepStatus.RUNNING or not sweep.early_stopping or not sweep.metric:
        return []
    trials = list(Launch.objects.filter(sweep=sweep))
    running = [t for t in trials if t.status == Status.RUNNING and t.trial is not None]
    if not running:
        return []
    refresh_curves(sweep, running)
    study = optimizer.study_for(sweep, trials)
    min_steps = int(sweep.early_stopping.get("min_steps", 1))
    pruned: list[int] = []
    attrs_before = {t.number: dict(t.system_attrs) for t in study.get_trials(deepcopy=False)}
    for launch in running:
        assert launch.trial is not None
        frozen = study.get_trials(deepcopy=False)[launch.trial]
        if frozen.last_step is None or frozen.last_step < min_steps:
            continue
        # A NaN or infinite latest value is pruned by every rule (Optuna's pruners agree
        # once they have enough trials; a diverged trial should not wait for them).
        diverged = not math.isfinite(frozen.intermediate_values[frozen.last_step])
        if diverged or study.pruner.prune(study, frozen):
            reason = prune_reason(sweep, study, study.get_trials(deepcopy=False)[launch.trial])
            if services.prune_launch(launch, reason):
                pruned.append(launch.pk)
    _keep_attrs(sweep.pk, study, attrs_before)
    return pruned


def _keep_attrs(sweep_pk: int, study: Any, before: dict[int, dict[str, Any]]) -> None:
    """Store what the pruner recorded on trials (ASHA's rungs) in `Sweep.trial_attrs`."""
    changed = {
        str(t.number): dict(t.system_attrs)
        for t in study.get_trials(deepcopy=False)
        if dict(t.system_attrs) != before.get(t.number, {})
    }
    if not changed:
        return
    with transaction.atomic():
        sweep = Sweep.objects.select_for_update(of=("self",)).get(pk=sweep_pk)
        attrs = dict(sweep.trial_attrs or {})
        for key, value in changed.items():
            attrs[key] = {**attrs.get(key, {}), **value}
        sweep.trial_attrs = attrs
        sweep.save(update_fields=["trial_attrs"])
