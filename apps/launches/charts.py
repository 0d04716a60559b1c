"""Charts of a sweep: trials' parameters against the chosen metric."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from apps.core.chart_text import chart_text, chart_texts
from apps.launches.models import Launch, Sweep
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
                found[pk] = {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}
        if not token:
            return found


def sweep_figure(sweep: Sweep, trials: list[Launch], metrics: dict[int, dict[str, float]]) -> str:
    """A parallel-coordinates chart as Plotly JSON ("" when there is nothing to draw yet)."""
    scored = [t for t in trials if sweep.metric and sweep.metric in metrics.get(t.pk, {})]
    if not scored:
        return ""
    dimensions: list[dict[str, Any]] = []
    for name in sweep.space:
        values = [t.parameters.get(name) for t in scored]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            log = isinstance(sweep.space[name], dict) and sweep.space[name].get("log")
            dimensions.append({"label": chart_text(name + (" (log)" if log else "")), "values": values})
        else:
            labels = sorted({str(v) for v in values})
            dimensions.append(
                {
                    "label": chart_text(name),
                    "values": [labels.index(str(v)) for v in values],
                    "tickvals": list(range(len(labels))),
                    "ticktext": chart_texts(labels),
                }
            )
    scores = [metrics[t.pk][sweep.metric] for t in scored]
    dimensions.append({"label": chart_text(sweep.metric), "values": scores})
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
    return str(figure.to_json())
