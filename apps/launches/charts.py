"""Charts of a sweep: trials' parameters against the chosen metric."""

from __future__ import annotations

from typing import Any

import plotly.colors as pc
import plotly.graph_objects as go

from apps.core.numbers import display, is_finite, normalise
from apps.launches.models import Launch, Status, Sweep
from apps.tracking.charts import numeric_dimension, param_dimension
from apps.tracking.gateway import gateway


def trial_metrics(sweep: Sweep, trials: list[Launch]) -> dict[int, dict[str, float]]:
    """Latest metric values of every trial, from one MLflow search (the trials are child runs
    of the sweep's parent run), not one call per trial."""
    if not trials or not sweep.mlflow_parent_run_id:
        return {}
    by_run = {t.mlflow_run_id: t.pk for t in trials if t.mlflow_run_id}
    experiment = trials[0].mlflow_experiment_id
    found: dict[int, dict[str, float]] = {}
    token = ""
    while True:
        runs, token = gateway().search_runs(
            [experiment], f"tags.plinth.sweep = '{sweep.pk}'", max_results=1000, page_token=token
        )
        for run in runs:
            pk = by_run.get(run["info"]["run_id"])
            if pk is not None:
                found[pk] = {m["key"]: normalise(m["value"]) for m in run.get("data", {}).get("metrics", [])}
        if not token:
            return found


def sweep_figure(sweep: Sweep, trials: list[Launch], metrics: dict[int, dict[str, float]]) -> dict[str, Any] | None:
    """A parallel-coordinates figure {data, layout} (None when there is nothing to draw yet):
    one dimension per parameter of the space, then the metric. A parameter declared
    `log: true`, or whose values span decades, is drawn on a real log scale (log10 of the
    values, ticks labelled `1e-4`; apps.tracking.charts.numeric_dimension); trials whose
    metric is NaN or ±inf are left out (they have no place on a number axis). Lines are
    coloured by the metric, the best yellow; pruned trials (stopped early, at the value
    they had then) are grey, below the colour scale (see `_line`)."""
    scored = [t for t in trials if sweep.metric and is_finite(metrics.get(t.pk, {}).get(sweep.metric))]
    if not scored:
        return None
    dimensions: list[dict[str, Any]] = []
    for name in sweep.space:
        values = [t.parameters.get(name) for t in scored]
        declared = sweep.space[name].get("log") if isinstance(sweep.space[name], dict) else None
        # Declared log: always log (when positive); otherwise the data decides.
        dimensions.append(param_dimension(name, values, log=True if declared else None))
    scores = [normalise(metrics[t.pk][sweep.metric]) for t in scored]
    dimensions.append(numeric_dimension(sweep.metric, scores, log=False))
    pruned = [t.status == Status.PRUNED for t in scored]
    figure = go.Figure(go.Parcoords(line=_line(sweep, scores, pruned), dimensions=dimensions))
    figure.update_layout(margin={"l": 60, "r": 40, "t": 40, "b": 20}, height=380)
    return figure.to_plotly_json()


PRUNED_GREY = "#c0c5cf"
# With pruned trials the colour runs from 0 to 1: pruned lines at 0 (grey), the others
# spread over [SCALE_START, 1], worst to best.
SCALE_START = 0.12


def _line(sweep: Sweep, scores: list[float], pruned: list[bool]) -> dict[str, Any]:
    """The parallel-coordinates `line`: the metric's colour scale (Viridis, the best value
    yellow whatever the direction). With pruned trials, the scale gets a grey band at its
    bottom: their lines are grey and the colour bar names the band "pruned", and the other
    trials' colours span worst → best of those trials alone (a pruned trial's value is from
    the middle of its run)."""
    if not any(pruned):
        return {"color": scores, "colorscale": "Viridis", "showscale": True, "reversescale": sweep.direction == "min"}
    ranked = [s for s, p in zip(scores, pruned, strict=True) if not p] or scores
    low, high = min(ranked), max(ranked)
    worst, best = (high, low) if sweep.direction == "min" else (low, high)

    def position(score: float) -> float:
        if high == low:
            return 1.0
        share = (score - worst) / (best - worst)
        return SCALE_START + (1 - SCALE_START) * min(max(share, 0.0), 1.0)

    viridis = pc.get_colorscale("Viridis")
    scale = [[0.0, PRUNED_GREY], [SCALE_START * 0.8, PRUNED_GREY]] + [
        [SCALE_START + (1 - SCALE_START) * stop, colour] for stop, colour in viridis
    ]
    ticks = [SCALE_START * 0.4, SCALE_START, 1.0] if high != low else [SCALE_START * 0.4, 1.0]
    labels = ["pruned", display(worst, 4), display(best, 4)] if high != low else ["pruned", display(best, 4)]
    return {
        "color": [0.0 if p else position(s) for s, p in zip(scores, pruned, strict=True)],
        "colorscale": scale,
        "cmin": 0.0,
        "cmax": 1.0,
        "showscale": True,
        "colorbar": {"tickvals": ticks, "ticktext": labels},
    }
