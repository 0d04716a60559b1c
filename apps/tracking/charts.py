"""Plotly figures of runs, built here from already-downsampled series and sent as JSON
(tracking.js only draws them). Line charts are assembled as text around the stored JSON
arrays — building hundreds of traces through plotly.graph_objects would validate every
point again and take seconds — while the two small figures are plain dicts."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from apps.tracking.runs import Run
from apps.tracking.series import Series

# Traces after the first VISIBLE_TRACES start hidden (legendonly): a click in the legend
# shows one; hundreds of drawn lines would only be noise and slow the page down.
VISIBLE_TRACES = 20
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
]  # fmt: skip
CONFIG = {"responsive": True, "displaylogo": False}
MARKERS_UP_TO = 50


def for_script(text: str) -> str:
    """JSON text made safe inside <script type="application/json"> (as Django's
    json_script does): no "<", ">" or "&" that could end the element."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def trace_names(runs: list[Run]) -> dict[str, str]:
    """Each run's name, with the start of its id where another run has the same name."""
    counts = Counter(run.display_name for run in runs)
    return {
        run.run_id: run.display_name if counts[run.display_name] == 1 else f"{run.display_name} ({run.run_id[:7]})"
        for run in runs
    }


def line_charts(
    runs: list[Run], keys: list[str], series_of: Callable[[str, str], Series | None], *, prefix: str = "chart"
) -> str:
    """A JSON list [{id, key, figure: {data, layout}}]: one line chart per metric, one trace
    per run (x = step), the same color for a run on every chart."""
    charts: list[str] = []
    names = trace_names(runs)
    for number, key in enumerate(keys):
        traces: list[str] = []
        for index, run in enumerate(runs):
            found = series_of(run.run_id, key)
            if found is None:
                continue
            head = {
                "type": "scatter",
                # A short series gets markers too: a metric logged once is a dot, not nothing.
                "mode": "lines" if found.points > MARKERS_UP_TO else "lines+markers",
                "marker": {"size": 5},
                "name": names[run.run_id],
                "legendgroup": run.run_id,
                "line": {"color": color(index), "width": 1.5},
                "hovertemplate": "step %{x}<br>%{y}<extra>%{fullData.name}</extra>",
            }
            if len(traces) >= VISIBLE_TRACES:
                head["visible"] = "legendonly"
            traces.append(json.dumps(head)[:-1] + ',"x":' + found.steps_json + ',"y":' + found.values_json + "}")
        layout = {
            "title": {"text": key, "x": 0.01},
            "height": 340,
            "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
            "xaxis": {"title": {"text": "step"}},
            "hovermode": "closest",
            "showlegend": len(traces) > 1,
            "legend": {"font": {"size": 11}},
        }
        chart_id = f"{prefix}-{number}"
        charts.append(
            '{"id":' + json.dumps(chart_id) + ',"key":' + json.dumps(key) + ',"traces":' + str(len(traces))
            + ',"figure":{"data":[' + ",".join(traces) + '],"layout":' + json.dumps(layout) + "}}"
        )  # fmt: skip
    return for_script("[" + ",".join(charts) + "]")


def _dimension(label: str, values: list[Any]) -> dict[str, Any]:
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            break
    if len(numbers) == len(values):
        return {"label": label, "values": numbers}
    labels = sorted({str(v) for v in values})
    return {
        "label": label,
        "values": [labels.index(str(v)) for v in values],
        "tickvals": list(range(len(labels))),
        "ticktext": labels,
    }


def parallel_coordinates(runs: list[Run], params: list[str], metric: str, direction: str) -> dict[str, Any] | None:
    """Params → `metric` for the runs that have it; None when fewer than two do."""
    scored = [run for run in runs if run.metrics.get(metric) is not None]
    if len(scored) < 2 or not params:
        return None
    values = [run.metrics[metric] for run in scored]
    dimensions = [_dimension(p, [run.params.get(p, "") for run in scored]) for p in params]
    dimensions.append({"label": metric, "values": values})
    return {
        "data": [
            {
                "type": "parcoords",
                "line": {
                    "color": values,
                    "colorscale": "Viridis",
                    "showscale": True,
                    "reversescale": direction == "min",
                },
                "dimensions": dimensions,
            }
        ],
        "layout": {"height": 400, "margin": {"l": 70, "r": 50, "t": 50, "b": 30}},
    }


def scatter(runs: list[Run], param: str, metric: str) -> dict[str, Any] | None:
    """One point per run: `param` (x; numbers when they all are) against `metric` (y)."""
    shown = [run for run in runs if run.metrics.get(metric) is not None and param in run.params]
    if not shown:
        return None
    position = {run.run_id: index for index, run in enumerate(runs)}
    names = trace_names(shown)
    xs: list[Any] = [run.params[param] for run in shown]
    with contextlib.suppress(ValueError):  # numbers when every value is one, else categories
        xs = [float(x) for x in xs]
    numeric = all(isinstance(x, float) for x in xs)
    # Learning rates and the like span decades: a log axis when the values do.
    log = numeric and min(xs) > 0 and max(xs) / min(xs) >= 100
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": xs,
                "y": [run.metrics[metric] for run in shown],
                "text": [names[run.run_id] for run in shown],
                "customdata": [run.run_id for run in shown],
                "marker": {"size": 9, "color": [color(position[run.run_id]) for run in shown]},
                "hovertemplate": "%{text}<br>" + param + " %{x}<br>" + metric + " %{y}<extra></extra>",
            }
        ],
        "layout": {
            "height": 380,
            "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
            "xaxis": {"title": {"text": param}, "type": "log" if log else "-"},
            "yaxis": {"title": {"text": metric}},
        },
    }
