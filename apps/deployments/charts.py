"""Charts of a deployment page: request rate, 5xx rate and p50/p95/p99 latency per minute,
one colour per revision, so a canary and the stable revision are seen side by side. Built
server-side as plain Plotly figures from the backend's per-minute series (at most a day of
minutes, ≤ 1,440 points a trace) and drawn by the one chart module (templates/core/_chart.html)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps.deployments.models import Revision
from apps.deployments.serving.base import MetricsSeries

COLOURS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2")
PERCENTILE_DASH = {"p50": "solid", "p95": "dash", "p99": "dot"}
MIN_ERROR_AXIS = 0.05  # the 5xx-rate axis spans at least 0..5 %


@dataclass(frozen=True)
class MetricFigure:
    """One chart of the page: `key` (its container's id suffix), `label` (for screen
    readers and the heading) and the Plotly `figure` {data, layout}."""

    key: str
    label: str
    figure: dict[str, Any]


def revision_label(revision: Revision) -> str:
    """ "r3 · v7": the revision number and the model version. Not its role (canary,
    stable, retired): that changes over the charted window, and the revisions table says
    it; a trace keeps one name over its whole history."""
    return f"r{revision.number} · v{revision.version}"


def _layout(
    y_title: str, since: datetime | None, until: datetime | None, *, y_range: list[float] | None = None
) -> dict[str, Any]:
    axis: dict[str, Any] = {"title": {"text": y_title}, "rangemode": "tozero"}
    if y_range is not None:  # a fraction shown as a percentage, over a fixed range
        axis.update(tickformat=".0%", range=y_range, autorange=False)
    xaxis: dict[str, Any] = {"type": "date"}
    if since is not None and until is not None:
        xaxis.update(range=[since.isoformat(), until.isoformat()], autorange=False)
    return {
        "height": 380,  # the chart container's own height (plinth.css .chart)
        "margin": {"l": 60, "r": 20, "t": 10, "b": 40},
        "xaxis": xaxis,
        "yaxis": axis,
        "legend": {"orientation": "h", "y": -0.25},
        "hovermode": "x unified",
    }


def _rate(errors: int, requests: int) -> float | None:
    return errors / requests if requests else None


def metric_figures(
    revisions: Sequence[Revision],
    series: Mapping[int, MetricsSeries],
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[MetricFigure]:
    """Three figures over `series` ({revision id: per-minute series}) of `revisions`
    (oldest first): requests per minute, 5xx rate (a fraction 0..1 drawn as a percentage
    over [0, max(5 %, the highest rate)]; gaps where a minute had no requests) and latency
    percentiles in ms (p50 solid, p95 dashed, p99 dotted). Lines with markers, so a single
    minute shows. The x axis spans [`since`, `until`] when both are given. Empty list when
    no revision had a request in the series (the page then says so)."""
    rate: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    highest_rate = 0.0
    total = 0
    for index, revision in enumerate(revisions):
        found = series.get(revision.pk)
        if found is None or not found.t:
            continue
        total += sum(found.requests)
        colour = COLOURS[index % len(COLOURS)]
        name = revision_label(revision)
        x = [t.isoformat() for t in found.t]
        line = {
            "type": "scatter",
            "mode": "lines+markers",
            "x": x,
            "name": name,
            "line": {"color": colour},
            "marker": {"size": 5},
        }
        rate.append({**line, "y": list(found.requests)})
        fractions = [_rate(e, r) for e, r in zip(found.errors, found.requests, strict=False)]
        highest_rate = max([highest_rate, *(f for f in fractions if f is not None)])
        errors.append({**line, "y": fractions})
        for key, values in (("p50", found.p50_ms), ("p95", found.p95_ms), ("p99", found.p99_ms)):
            latency.append(
                {
                    **line,
                    "y": list(values),
                    "name": f"{name} {key}",
                    "line": {"color": colour, "dash": PERCENTILE_DASH[key]},
                }
            )
    if not total:
        return []
    error_range = [0.0, min(1.0, max(MIN_ERROR_AXIS, highest_rate * 1.1))]
    return [
        MetricFigure("rate", "Requests per minute", {"data": rate, "layout": _layout("requests / min", since, until)}),
        MetricFigure(
            "errors", "5xx rate", {"data": errors, "layout": _layout("5xx rate", since, until, y_range=error_range)}
        ),
        MetricFigure(
            "latency", "Latency p50 / p95 / p99 (ms)", {"data": latency, "layout": _layout("ms", since, until)}
        ),
    ]
