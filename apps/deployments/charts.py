"""Charts of a deployment page: request rate, 5xx rate and p50/p95/p99 latency per minute,
one colour per revision, so a canary and the stable revision are seen side by side. Built
server-side as plain Plotly figures from the backend's per-minute series (at most a day of
minutes, ≤ 1,440 points a trace) and drawn by the one chart module (templates/core/_chart.html)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apps.deployments.models import Revision, RevisionStatus
from apps.deployments.serving.base import MetricsSeries

COLOURS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2")
PERCENTILE_DASH = {"p50": "solid", "p95": "dash", "p99": "dot"}


@dataclass(frozen=True)
class MetricFigure:
    """One chart of the page: `key` (its container's id suffix), `label` (for screen
    readers and the heading) and the Plotly `figure` {data, layout}."""

    key: str
    label: str
    figure: dict[str, Any]


def revision_label(revision: Revision) -> str:
    """ "r3 · v7 (canary)": the revision number, the model version and its role."""
    role = ""
    if revision.status == RevisionStatus.SERVING:
        role = " (canary)" if revision.is_canary else " (stable)"
    elif revision.status in (RevisionStatus.READY, RevisionStatus.RETIRED, RevisionStatus.FAILED):
        role = f" ({revision.status})"
    return f"r{revision.number} · v{revision.version}{role}"


def _layout(y_title: str, *, percent: bool = False) -> dict[str, Any]:
    axis: dict[str, Any] = {"title": {"text": y_title}, "rangemode": "tozero"}
    if percent:
        axis["tickformat"] = ".0%"
    return {
        "height": 380,  # the chart container's own height (plinth.css .chart)
        "margin": {"l": 60, "r": 20, "t": 10, "b": 40},
        "xaxis": {"type": "date"},
        "yaxis": axis,
        "legend": {"orientation": "h", "y": -0.25},
        "hovermode": "x unified",
    }


def _rate(errors: int, requests: int) -> float | None:
    return errors / requests if requests else None


def metric_figures(revisions: Sequence[Revision], series: Mapping[int, MetricsSeries]) -> list[MetricFigure]:
    """Three figures over `series` ({revision id: per-minute series}) of `revisions`
    (oldest first): requests per minute, 5xx rate (a fraction; gaps where a minute had no
    requests) and latency percentiles in ms (p50 solid, p95 dashed, p99 dotted). Empty
    list when no revision has a series."""
    rate: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    for index, revision in enumerate(revisions):
        found = series.get(revision.pk)
        if found is None or not found.t:
            continue
        colour = COLOURS[index % len(COLOURS)]
        name = revision_label(revision)
        x = [t.isoformat() for t in found.t]
        line = {"type": "scatter", "mode": "lines", "x": x, "name": name, "line": {"color": colour}}
        rate.append({**line, "y": list(found.requests)})
        errors.append({**line, "y": [_rate(e, r) for e, r in zip(found.errors, found.requests, strict=False)]})
        for key, values in (("p50", found.p50_ms), ("p95", found.p95_ms), ("p99", found.p99_ms)):
            latency.append(
                {
                    **line,
                    "y": list(values),
                    "name": f"{name} {key}",
                    "line": {"color": colour, "dash": PERCENTILE_DASH[key]},
                }
            )
    if not rate:
        return []
    return [
        MetricFigure("rate", "Requests per minute", {"data": rate, "layout": _layout("requests / min")}),
        MetricFigure("errors", "5xx rate", {"data": errors, "layout": _layout("5xx rate", percent=True)}),
        MetricFigure("latency", "Latency p50 / p95 / p99 (ms)", {"data": latency, "layout": _layout("ms")}),
    ]
