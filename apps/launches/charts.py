"""Charts of a sweep: trials' parameters against the chosen metric."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from apps.core.numbers import is_finite, normalise
from apps.launches.models import Launch, Sweep
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
    metric is NaN or ±inf are left out (they have no place on a number axis)."""
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
    figure = go.Figure(
        go.Parcoords(
            line={
                "color": scores,
                "colorscale": "Viridis",
                "showscale": True,
                "reversescale": sweep.direction == "min",
            },
            dimensions=dimensions,
        )
    )
    figure.update_layout(margin={"l": 60, "r": 40, "t": 40, "b": 20}, height=380)
    return figure.to_plotly_json()
