"""Evidence of a promotion request: the candidate version's run metrics beside those of the
version holding the alias now, captured when the request is made; the metric gate that
compares them; and the chart that shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from django.utils import timezone

from apps.core.chart_text import chart_text, chart_texts
from apps.core.numbers import display, is_finite, normalise
from apps.projects.models import Project
from apps.registry.mlflow import RegistryGateway
from apps.registry.models import Comparison, PromotionRequest


def _side(version: dict[str, Any] | None, runs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if version is None:
        return None
    run = runs.get(version.get("run_id", ""), {})
    return {
        "version": int(version["version"]),
        "run_id": version.get("run_id", ""),
        "run_name": run.get("run_name", ""),
        "experiment_id": run.get("experiment_id", ""),
        "metrics": run.get("metrics", {}),
    }


def capture(
    gateway: RegistryGateway,
    alias: str,
    candidate: dict[str, Any],
    holder: dict[str, Any] | None,
    project: Project | None = None,
) -> dict[str, Any]:
    """The evidence of a request: both versions with their runs' latest metric values. With
    `project`, a run outside the project's experiment is kept without its data (see
    `scoped_evidence`)."""
    runs = gateway.run_summaries([v.get("run_id", "") for v in (candidate, holder) if v])
    evidence = {
        "captured_at": timezone.now().isoformat(),
        "alias": alias,
        "candidate": _side(candidate, runs),
        "holder": _side(holder, runs),
    }
    return scoped_evidence(evidence, project) if project is not None else evidence


def _scoped_side(side: dict[str, Any] | None, project: Project) -> dict[str, Any] | None:
    from apps.tracking.lookups import run_in_project

    if not side or run_in_project(project, side.get("experiment_id")):
        return side
    # A run MLflow no longer has left nothing to hide; one with data elsewhere is "outside".
    outside = bool(
        side.get("outside_project") or side.get("experiment_id") or side.get("run_name") or side.get("metrics")
    )
    return {
        "version": side.get("version"),
        "run_id": side.get("run_id", ""),
        "run_name": "",
        "experiment_id": "",
        "metrics": {},
        "outside_project": outside,
    }


def scoped_evidence(evidence: dict[str, Any], project: Project) -> dict[str, Any]:
    """`evidence` (as `capture` makes it) without the name and metrics of any run that is
    not in `project`'s experiment (apps.tracking.lookups.run_in_project, by experiment id):
    such a side keeps its version and run id and says `outside_project`. Applied when the
    evidence is captured and again when it is shown (evidence captured before this rule)."""
    if not evidence:
        return evidence
    return {
        **evidence,
        "candidate": _scoped_side(evidence.get("candidate"), project),
        "holder": _scoped_side(evidence.get("holder"), project),
    }


def metric_rows(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric either version has: both values and the difference (None unless
    both are finite numbers: NaN or inf minus anything says nothing)."""
    candidate = (evidence.get("candidate") or {}).get("metrics", {})
    holder = (evidence.get("holder") or {}).get("metrics", {})
    rows = []
    for key in sorted(set(candidate) | set(holder)):
        new, old = candidate.get(key), holder.get(key)
        rows.append(
            {
                "metric": key,
                "candidate": new,
                "holder": old,
                "delta": new - old if is_finite(new) and is_finite(old) else None,
            }
        )
    return rows


@dataclass(frozen=True)
class Gate:
    """The outcome of a request's metric gate. `passed` is None when there is no gate."""

    passed: bool | None
    text: str


def evaluate_gate(request: PromotionRequest) -> Gate:
    """ "metric X must be ≥ / ≤ the current holder's", on the evidence of the request.

    No gate, or no current holder to compare with: nothing blocks. A candidate without the
    metric fails (there is nothing to show it is as good); so does a candidate whose value is
    NaN or ±inf (MLflow's ±1.797e308 sentinels included): a diverged run proves nothing, and
    +inf would otherwise beat every holder. A holder without the metric, or with a
    non-finite value, passes (there is no number to beat)."""
    metric, comparison = request.gate_metric, request.gate_comparison or Comparison.GTE
    if not metric:
        return Gate(None, "")
    sign = Comparison(comparison).label
    evidence = scoped_evidence(request.evidence, request.project)
    candidate = evidence.get("candidate") or {}
    holder = evidence.get("holder")
    new = candidate.get("metrics", {}).get(metric)
    if new is None:
        return Gate(False, f"Gate failed: version {request.version}'s run has no metric {metric!r}.")
    if not is_finite(new):
        return Gate(
            False,
            f"Gate failed: {metric} of version {request.version} is {display(new)}, not a finite number "
            "that can be compared.",
        )
    if not holder:
        return Gate(True, f"Gate passed: no version holds {request.alias} yet, so {metric} {new:.4g} stands alone.")
    old = holder.get("metrics", {}).get(metric)
    if old is None:
        return Gate(True, f"Gate passed: the current holder (version {holder['version']}) has no {metric} to beat.")
    if not is_finite(old):
        return Gate(
            True,
            f"Gate passed: the current holder's {metric} (version {holder['version']}) is {display(old)}, "
            "no number to beat.",
        )
    ok = new >= old if comparison == Comparison.GTE else new <= old
    verdict = "passed" if ok else "failed"
    return Gate(
        ok,
        f"Gate {verdict}: {metric} of version {request.version} is {new:.6g}, which must be {sign} "
        f"{old:.6g} (version {holder['version']}, the current {request.alias}).",
    )


def _bar_values(values: list[Any]) -> dict[str, Any]:
    """Bar heights and labels: a finite value is its bar; NaN, ±inf (or MLflow's ±1.797e308
    sentinels) get a zero-height bar labelled "NaN"/"inf"/"-inf" — never a bar 1.8e308 high
    that flattens every other; a missing value (None) gets no bar and no label."""
    heights: list[float | None] = []
    labels: list[str] = []
    for value in values:
        finite = value is not None and is_finite(value)
        heights.append(normalise(value) if finite else (None if value is None else 0.0))
        labels.append("" if finite or value is None else display(value))
    return {"y": heights, "text": labels, "textposition": "outside"}


def evidence_figure(evidence: dict[str, Any]) -> dict[str, Any] | None:
    """A grouped bar chart {data, layout} of the metrics the two versions share or have;
    None when there is nothing to draw."""
    rows = [row for row in metric_rows(evidence) if row["candidate"] is not None or row["holder"] is not None]
    if not rows:
        return None
    candidate, holder = evidence.get("candidate") or {}, evidence.get("holder")
    names = chart_texts(row["metric"] for row in rows)
    bars = [
        go.Bar(
            name=chart_text(f"version {candidate.get('version')} (candidate)"),
            x=names,
            marker_color="#2f5bea",
            **_bar_values([row["candidate"] for row in rows]),
        )
    ]
    if holder:
        bars.append(
            go.Bar(
                name=chart_text(f"version {holder['version']} (current {evidence.get('alias', '')})"),
                x=names,
                marker_color="#98a2b3",
                **_bar_values([row["holder"] for row in rows]),
            )
        )
    figure = go.Figure(bars)
    figure.update_layout(
        barmode="group", height=320, margin={"l": 50, "r": 20, "t": 30, "b": 40}, legend={"orientation": "h"}
    )
    return figure.to_plotly_json()
