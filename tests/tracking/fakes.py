"""FakeMlflow: a stateful stand-in for the MLflow tracking server at the gateway's method
level, for tests that must not need a real server (the authorization matrix, query
budgets). It answers in MLflow's REST shapes, keeps runs, histories and artifacts, and
counts calls. Tests of behaviour against MLflow itself use the real server instead.

Filters: only what the portal sends itself — "" and `attributes.run_id IN (...)`, and the
sweep page's `tags.<key> = '<value>'`; anything else is MLflow's 400, as a bad filter is."""

from __future__ import annotations

import base64
import json
import math
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from apps.tracking.gateway import HISTORY_BULK_LIMIT, MlflowError, MlflowGateway

_IN = re.compile(r"^attributes\.run_id IN \(([^)]*)\)$")
_TAG = re.compile(r"^tags\.([\w.]+) = '([^']*)'$")
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_METRIC_CMP = re.compile(r"^metrics\.(`[^`]+`|[\w.\-/]+)\s*(<=|>=|<|>|=)\s*(-?[\d.eE+\-]+)$")
_METRIC_ORDER = re.compile(r"^metrics\.(`[^`]+`|[\w.\-/]+)(?:\s+(ASC|DESC))?$", re.IGNORECASE)
_OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
}
# What MLflow's store keeps for ±inf (it clamps to the largest double; NaN it keeps).
_FLOAT_MAX = 1.7976931348623157e308


def _stored(value: float) -> float:
    """A logged value as MLflow's store gives it back: ±inf becomes ±1.797e308."""
    return math.copysign(_FLOAT_MAX, value) if math.isinf(value) else value


def _wire(value: float) -> float | str:
    """A value as MLflow's REST answers (runs/get, runs/search, metrics/get-history):
    the clamped float, and NaN as the string "NaN" (protobuf's JSON for it)."""
    return "NaN" if math.isnan(value) else _stored(value)


@dataclass
class FakeRun:
    run_id: str
    experiment_id: str
    name: str = ""
    status: str = "FINISHED"
    lifecycle_stage: str = "active"
    start_time: int = 1_700_000_000_000
    end_time: int | None = 1_700_000_060_000
    user: str = "someone"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # key -> [(step, timestamp, value)]
    history: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def latest_value(self, key: str) -> float | None:
        """The latest value of `key` as MLflow's store keeps it (±inf clamped), None if never logged."""
        points = self.history.get(key)
        return _stored(max(points)[2]) if points else None

    def latest(self) -> list[dict[str, Any]]:
        found = []
        for key, points in self.history.items():
            if points:
                step, timestamp, value = max(points)
                found.append({"key": key, "value": _wire(value), "timestamp": timestamp, "step": step})
        return found

    def as_mlflow(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "run_id": self.run_id,
            "run_uuid": self.run_id,
            "experiment_id": self.experiment_id,
            "run_name": self.name,
            "user_id": self.user,
            "status": self.status,
            "start_time": self.start_time,
            "artifact_uri": f"mlflow-artifacts:/{self.experiment_id}/{self.run_id}/artifacts",
            "lifecycle_stage": self.lifecycle_stage,
        }
        if self.end_time is not None:
            info["end_time"] = self.end_time
        data: dict[str, Any] = {
            "metrics": self.latest(),
            "params": [{"key": k, "value": v} for k, v in self.params.items()],
            "tags": [{"key": k, "value": v} for k, v in {"mlflow.runName": self.name, **self.tags}.items()],
        }
        # MLflow's JSON leaves out an empty list (a run without metrics has no "metrics").
        return {"info": info, "data": {k: v for k, v in data.items() if v}, "inputs": {}, "outputs": {}}


class FakeResponse:
    """What open_artifact returns: a streamed body."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = {"Content-Length": str(len(body))}
        self.closed = False

    def iter_content(self, chunk_size: int = 1) -> Any:
        for start in range(0, len(self.body), chunk_size):
            yield self.body[start : start + chunk_size]

    def close(self) -> None:
        self.closed = True


def _missing() -> MlflowError:
    return MlflowError("Run not found", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)


class FakeMlflow:
    METHODS = (
        "search_runs",
        "get_run",
        "get_history_bulk",
        "get_metric_history",
        "list_artifacts",
        "open_artifact",
    )

    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.calls: Counter[str] = Counter()

    def add(self, run: FakeRun) -> FakeRun:
        self.runs[run.run_id] = run
        return run

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
        for name in self.METHODS:
            method = getattr(self, name)
            monkeypatch.setattr(MlflowGateway, name, lambda gw, *a, _m=method, **k: _m(*a, **k))
        return self

    # -- the gateway's methods --------------------------------------------------------------
    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        order_by: list[str] | None = None,
        max_results: int = 1000,
        page_token: str = "",
        run_view_type: str = "ACTIVE_ONLY",
    ) -> tuple[list[dict[str, Any]], str]:
        self.calls["search_runs"] += 1
        runs = [r for r in self.runs.values() if r.experiment_id in experiment_ids]
        if run_view_type == "ACTIVE_ONLY":
            runs = [r for r in runs if r.lifecycle_stage == "active"]
        elif run_view_type == "DELETED_ONLY":
            runs = [r for r in runs if r.lifecycle_stage == "deleted"]
        text = filter_string.strip()
        for clause in _AND.split(text) if text else []:
            if match := _IN.match(clause):
                wanted = {part.strip().strip("'") for part in match.group(1).split(",")}
                runs = [r for r in runs if r.run_id in wanted]
            elif match := _TAG.match(clause):
                runs = [r for r in runs if r.tags.get(match.group(1)) == match.group(2)]
            elif match := _METRIC_CMP.match(clause):
                key, op, bound = match.group(1).strip("`"), match.group(2), float(match.group(3))
                # MLflow compares the stored (clamped) latest value; NaN and no value never match.
                runs = [
                    r
                    for r in runs
                    if (v := r.latest_value(key)) is not None and not math.isnan(v) and _OPS[op](v, bound)
                ]
            else:
                raise MlflowError(f"Invalid filter {text!r}", error_code="INVALID_PARAMETER_VALUE")
        runs.sort(key=lambda r: (-r.start_time, r.run_id))  # MLflow breaks ties by run id
        if order_by and (match := _METRIC_ORDER.match(order_by[0])):
            key, descending = match.group(1).strip("`"), (match.group(2) or "ASC").upper() == "DESC"
            valued = [r for r in runs if (v := r.latest_value(key)) is not None and not math.isnan(v)]
            valued.sort(key=lambda r: r.latest_value(key) or 0.0, reverse=descending)  # stable: ties keep the above
            nan = [r for r in runs if (v := r.latest_value(key)) is not None and math.isnan(v)]
            runs = valued + nan + [r for r in runs if r.latest_value(key) is None]  # NaN, then no value: last
        # MLflow's run-search tokens: base64 of {"offset": N} (SearchUtils.create_page_token).
        start = json.loads(base64.b64decode(page_token))["offset"] if page_token else 0
        page = runs[start : start + max_results]
        more = start + max_results < len(runs)
        token = base64.b64encode(json.dumps({"offset": start + max_results}).encode()).decode()
        return [r.as_mlflow() for r in page], token if more else ""

    def get_run(self, run_id: str) -> dict[str, Any]:
        self.calls["get_run"] += 1
        if run_id not in self.runs:
            raise _missing()
        return self.runs[run_id].as_mlflow()

    def get_history_bulk(
        self, run_ids: list[str], key: str, max_results: int = HISTORY_BULK_LIMIT
    ) -> list[dict[str, Any]]:
        self.calls["get_history_bulk"] += 1
        points = [
            {"run_id": r.run_id, "key": key, "step": step, "timestamp": ts, "value": _stored(value)}
            for r in (self.runs[i] for i in run_ids if i in self.runs)
            for step, ts, value in r.history.get(key, [])
        ]
        points.sort(key=lambda p: (p["run_id"], p["timestamp"], p["step"], p["value"]))
        return points[:max_results]

    def get_metric_history(
        self, run_id: str, key: str, max_results: int = HISTORY_BULK_LIMIT, page_token: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        self.calls["get_metric_history"] += 1
        run = self.runs.get(run_id)  # MLflow: an unknown run has an empty history, not a 404
        points = sorted(run.history.get(key, []) if run else [], key=lambda p: (p[1], p[0], p[2]))
        # MLflow's history tokens are base64 of {"offset": N}, as its run-search tokens.
        start = json.loads(base64.b64decode(page_token))["offset"] if page_token else 0
        page = points[start : start + max_results]
        more = start + max_results < len(points)
        token = base64.b64encode(json.dumps({"offset": start + max_results}).encode()).decode() if more else ""
        return [{"key": key, "step": s, "timestamp": t, "value": _wire(v)} for s, t, v in page], token

    def list_artifacts(self, run_id: str, path: str = "") -> list[dict[str, Any]]:
        self.calls["list_artifacts"] += 1
        if run_id not in self.runs:
            raise _missing()
        prefix = f"{path}/" if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, body in self.runs[run_id].artifacts.items():
            if not name.startswith(prefix):
                continue
            head, _, rest = name[len(prefix) :].partition("/")
            full = prefix + head
            entry: dict[str, Any] = {"path": full, "is_dir": bool(rest)}
            if not rest:
                entry["file_size"] = len(body)
            entries[full] = entry
        return sorted(entries.values(), key=lambda e: e["path"])

    def open_artifact(self, run_id: str, path: str) -> FakeResponse:
        self.calls["open_artifact"] += 1
        run = self.runs.get(run_id)
        body = run.artifacts.get(path) if run is not None else None
        if body is None:
            raise MlflowError("No such artifact.", error_code="RESOURCE_DOES_NOT_EXIST", http_status=404)
        return FakeResponse(body)


def make_run(
    run_id: str, experiment_id: str, *, metrics: dict[str, list[float]] | None = None, **kwargs: Any
) -> FakeRun:
    """A finished run whose metric `k` has the values given, at steps 0..n-1."""
    history = {
        key: [(step, 1_700_000_000_000 + step, float(value)) for step, value in enumerate(values)]
        for key, values in (metrics or {}).items()
    }
    return FakeRun(run_id=run_id, experiment_id=experiment_id, history=history, **kwargs)
