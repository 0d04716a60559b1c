"""Evidence of a promotion request: the candidate version's run metrics beside those of the
version holding the alias now, captured when the request is made; the metric gate that
compares them; and the chart that shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from django.utils import timezone

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
    gateway: RegistryGateway, alias: str, candidate: dict[str, Any], holder: dict[str, Any] | None
) -> dict[str, Any]:
    """The evidence of a request: both versions with their runs' latest metric values."""
    runs = gateway.run_summaries([v.get("run_id", "") for v in (candidate, holder) if v])
    return {
        "captured_at": timezone.now().isoformat(),
        "alias": alias,
        "candidate": _side(candidate, runs),
        "holder": _side(holder, runs),
    }


def metric_rows(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric either version has: both values and the difference."""
    candidate = (evidence.get("candidate") or {}).get("metrics", {})
    holder = (evidence.get("holder") or {}).get("metrics", {})
    rows = []
    for key in sorted(set(candidate) | set(holder)):
        new, old = candidate.get(key), holder.get(key)
        rows.append(
            {"metric": key, "candidate": new, "holder": old, "delta": None if new is None or old is None else new - old}
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
    metric fails (there is nothing to show it is as good); a holder without it passes."""
    metric, comparison = request.gate_metric, request.gate_comparison or Comparison.GTE
    if not metric:
        return Gate(None, "")
    sign = Comparison(comparison).label
    candidate = request.evidence.get("candidate") or {}
    holder = request.evidence.get("holder")
    new = candidate.get("metrics", {}).get(metric)
    if new is None:
        return Gate(False, f"Gate failed: version {request.version}'s run has no metric {metric!r}.")
    if not holder:
        return Gate(True, f"Gate passed: no version holds {request.alias} yet, so {metric} {new:.4g} stands alone.")
    old = holder.get("metrics", {}).get(metric)
    if old is None:
        return Gate(True, f"Gate passed: the current holder (version {holder['version']}) has no {metric} to beat.")
    ok = new >= old if comparison == Comparison.GTE else new <= old
    verdict = "passed" if ok else "failed"
    return Gate(
        ok,
        f"Gate {verdict}: {metric} of version {request.version} is {new:.6g}, which must be {sign} "
        f"{old:.6g} (version {holder['version']}, the current {request.alias}).",
    )


def evidence_figure(evidence: dict[str, Any]) -> str:
    """A grouped bar chart (Plotly JSON) of the metrics the two versions share or have;
    "" when there is nothing to draw."""
    rows = [row for row in metric_rows(evidence) if row["candidate"] is not None or row["holder"] is not None]
    if not rows:
        return ""
    candidate, holder = evidence.get("candidate") or {}, evidence.get("holder")
    names = [row["metric"] for row in rows]
    bars = [
        go.Bar(
            name=f"version {candidate.get('version')} (candidate)",
            x=names,
            y=[row["candidate"] for row in rows],
            marker_color="#2f5bea",
        )
    ]
    if holder:
        bars.append(
            go.Bar(
                name=f"version {holder['version']} (current {evidence.get('alias', '')})",
                x=names,
                y=[row["holder"] for row in rows],
                marker_color="#98a2b3",
            )
        )
    figure = go.Figure(bars)
    figure.update_layout(
        barmode="group", height=320, margin={"l": 50, "r": 20, "t": 30, "b": 40}, legend={"orientation": "h"}
    )
    return str(figure.to_json())
