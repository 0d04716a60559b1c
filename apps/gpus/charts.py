"""Plotly figures for the GPU pages, built server-side as figure dicts (data + layout) from
already-aggregated data and embedded with `json_script`. Dicts rather than
plotly.graph_objects: a 500-GPU heatmap is 12,000 cells, and validating them through the
object model costs more than the query that produced them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.core.chart_text import chart_text, chart_texts
from apps.gpus.usage import UsageRow

ALLOCATED = "#9aa5b1"
USED = "#2f6fde"
CONFIG = {"responsive": True, "displaylogo": False}


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
        "legend": {"orientation": "h", "y": 1.08},
    }
    layout.update(extra)
    return layout


def heatmap_figure(columns: list[datetime], labels: list[str], rows: list[list[float | None]]) -> dict[str, Any]:
    """Mean utilization (%) per GPU (a row each) per hour (a column each)."""
    return {
        "data": [
            {
                "type": "heatmap",
                "x": columns,
                "y": chart_texts(labels),
                "z": rows,
                "zmin": 0,
                "zmax": 100,
                "colorscale": "Viridis",
                "colorbar": {"title": {"text": "util %"}},
                "hovertemplate": "%{y}<br>%{x}<br>%{z:.0f} %<extra></extra>",
                "hoverongaps": False,
            }
        ],
        "layout": _layout(
            max(260, min(14 * len(labels) + 80, 1800)),
            yaxis={"autorange": "reversed", "type": "category", "showticklabels": len(labels) <= 80},
            xaxis={"type": "date"},
        ),
    }


def usage_figure(rows: list[UsageRow]) -> dict[str, Any]:
    """GPU-hours allocated versus used, one pair of bars per team or project."""
    keys = chart_texts(r.key for r in rows)
    return {
        "data": [
            {
                "type": "bar",
                "name": "allocated",
                "x": keys,
                "y": [round(r.allocated_hours, 2) for r in rows],
                "marker": {"color": ALLOCATED},
            },
            {
                "type": "bar",
                "name": "used",
                "x": keys,
                "y": [round(r.used_hours, 2) for r in rows],
                "marker": {"color": USED},
            },
        ],
        "layout": _layout(340, barmode="group", yaxis={"title": {"text": "GPU-hours"}}),
    }


def timeline_figure(points: list[tuple[datetime, float, float]]) -> dict[str, Any]:
    """GPU-hours allocated versus used per day of the period."""
    return {
        "data": [
            {
                "type": "bar",
                "name": "allocated",
                "x": [p[0] for p in points],
                "y": [round(p[1], 2) for p in points],
                "marker": {"color": ALLOCATED},
            },
            {
                "type": "bar",
                "name": "used",
                "x": [p[0] for p in points],
                "y": [round(p[2], 2) for p in points],
                "marker": {"color": USED},
            },
        ],
        "layout": _layout(300, barmode="overlay", yaxis={"title": {"text": "GPU-hours per day"}}),
    }


def launch_figure(series: dict[str, Any]) -> dict[str, Any]:
    """Utilization (top) and memory used (bottom) of each GPU a launch held."""
    data: list[dict[str, Any]] = []
    for label, trace in series["gpus"].items():
        name = chart_text(label)
        data.append({"type": "scatter", "mode": "lines", "name": f"{name} util", "x": trace["t"], "y": trace["util"]})
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"{name} memory",
                "x": trace["t"],
                "y": trace["mem"],
                "yaxis": "y2",
                "line": {"dash": "dot"},
            }
        )
    layout = _layout(
        380,
        xaxis={"type": "date", "anchor": "y2"},
        yaxis={"title": {"text": "utilization %"}, "range": [0, 100], "domain": [0.55, 1]},
        yaxis2={"title": {"text": "memory MiB"}, "domain": [0, 0.42], "rangemode": "tozero"},
    )
    return {"data": data, "layout": layout}
