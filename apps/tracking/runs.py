"""MLflow runs as Plinth shows them: read from MLflow's runs/search, tied to the project
whose experiment holds them and to the launch that started them, if any."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from apps.core.errors import InvalidInput
from apps.core.numbers import json_safe, normalise
from apps.launches.models import Launch
from apps.projects.models import Project
from apps.tracking.gateway import gateway

# MLflow's run statuses that mean "it will log nothing more" (unless someone resumes it).
TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})
# Page sizes of the runs table and the API (MLflow's search answers at most 50,000 a page).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_ORDER = "attributes.start_time DESC"


def to_number(value: Any) -> float | None:
    """A metric value from MLflow's JSON as a float, or None when it is not a number.

    NaN and the infinities are kept, as the floats NaN/±inf: they arrive as the strings
    "NaN"/"Infinity"/"-Infinity" or as MLflow's ±1.7976931348623157e308 sentinels
    (apps.core.numbers.normalise). A NaN is a logged value, unlike a metric never logged
    (absent from `Run.latest`); JSON answers carry it via apps.core.numbers.json_safe."""
    try:
        return normalise(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Latest:
    """MLflow's latest value of a metric in a run (the point with the highest step)."""

    step: int
    timestamp: int
    value: float | None


@dataclass
class Run:
    """One MLflow run, as read from runs/search or runs/get."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    lifecycle_stage: str
    start_time: int | None
    end_time: int | None
    user: str
    params: dict[str, str]
    latest: dict[str, Latest]
    tags: dict[str, str]
    artifact_uri: str
    project: Project | None = None
    launch_id: int | None = None
    launch_author: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mlflow(cls, raw: dict[str, Any]) -> Run:
        info = raw.get("info", {})
        data = raw.get("data", {})
        tags = {t["key"]: t.get("value", "") for t in data.get("tags", [])}
        latest = {
            m["key"]: Latest(int(m.get("step", 0) or 0), int(m.get("timestamp", 0) or 0), to_number(m.get("value")))
            for m in data.get("metrics", [])
        }
        end_time = info.get("end_time")
        return cls(
            run_id=str(info.get("run_id") or info.get("run_uuid")),
            name=str(info.get("run_name") or tags.get("mlflow.runName", "")),
            experiment_id=str(info.get("experiment_id", "")),
            status=str(info.get("status", "")),
            lifecycle_stage=str(info.get("lifecycle_stage", "active")),
            start_time=int(info["start_time"]) if info.get("start_time") else None,
            end_time=int(end_time) if end_time else None,
            user=tags.get("mlflow.user") or str(info.get("user_id") or ""),
            params={p["key"]: p.get("value", "") for p in data.get("params", [])},
            latest=latest,
            tags=tags,
            artifact_uri=str(info.get("artifact_uri", "")),
        )

    @property
    def is_deleted(self) -> bool:
        return self.lifecycle_stage == "deleted"

    @property
    def is_finished(self) -> bool:
        """Finished for good: a terminal status and an end time. A resumed run goes back to
        RUNNING, and ends again with a new end time."""
        return self.status in TERMINAL_STATUSES and self.end_time is not None

    @property
    def metrics(self) -> dict[str, float | None]:
        return {key: latest.value for key, latest in self.latest.items()}

    @property
    def duration_seconds(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return max(0.0, (self.end_time - self.start_time) / 1000)

    @property
    def author(self) -> str:
        """Who ran it: the launch's creator for runs launched through Plinth, otherwise the
        user MLflow recorded (the `mlflow.user` tag of the client that logged it)."""
        return self.launch_author or ("" if self.user == "unknown" else self.user)

    @property
    def display_name(self) -> str:
        return self.name or self.run_id[:12]

    @property
    def parent_run_id(self) -> str:
        """The run this one is nested under: its `mlflow.parentRunId` tag (set by MLflow's
        client for `start_run(nested=True)` and by Plinth on a sweep's trials), "" for none."""
        return self.tags.get("mlflow.parentRunId", "").strip()

    def as_api(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "experiment_id": self.experiment_id,
            "project": self.project.full_slug if self.project is not None else None,
            "launch": self.launch_id,
            "author": self.author,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_seconds": self.duration_seconds,
            "params": self.params,
            "metrics": json_safe(self.metrics),
            "tags": {k: v for k, v in self.tags.items() if not k.startswith("mlflow.")},
            "parent_run_id": self.parent_run_id or None,
        }


def run_in_project(project: Project | None, experiment_id: Any) -> bool:
    """Whether an MLflow run whose experiment is `experiment_id` belongs to `project`: the
    one check every page, endpoint and task applies before it shows a run's data (name,
    params, metrics, artifacts). The rule (ARCHITECTURE.md, security rules): an MLflow
    object belongs to a project by id: the run's experiment id equals the project's linked
    experiment id; names are for display only. A project with no linked experiment has no
    runs."""
    if project is None or not project.mlflow_experiment_id:
        return False
    return str(experiment_id or "") == project.mlflow_experiment_id


def attach(runs: list[Run], projects: dict[str, Project]) -> None:
    """Set each run's project (by experiment id) and its launch: one query for all runs."""
    for run in runs:
        run.project = projects.get(run.experiment_id)
    project_ids = {run.project.pk for run in runs if run.project is not None}
    if not runs or not project_ids:
        return
    launches = (
        Launch.objects.filter(mlflow_run_id__in=[run.run_id for run in runs], project_id__in=project_ids)
        .values_list("mlflow_run_id", "pk", "created_by__username")
        .order_by("pk")
    )
    found = {run_id: (pk, username) for run_id, pk, username in launches}
    for run in runs:
        if run.run_id in found:
            run.launch_id, run.launch_author = found[run.run_id]


@dataclass
class RunPage:
    runs: list[Run]
    next_page_token: str
    param_keys: list[str]
    metric_keys: list[str]


# MLflow's store keeps +inf and -inf as the largest double (and NaN as NaN): ordered by a
# metric, it puts +inf first in a DESC sort and -inf first in an ASC one.
_MLFLOW_MAX = "1.7976931348623157e308"
_METRIC_ORDER = re.compile(r"^\s*(metrics\.(?:`[^`]+`|\"[^\"]+\"|[\w.\-/]+))(?:\s+(?:ASC|DESC))?\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
# MLflow answers 500 past 20 conditions (apps.tracking.forms.MAX_CLAUSES); the phases add two.
_MAX_USER_CLAUSES_FOR_PHASES = 18
_PHASES = 4  # finite values; +inf; -inf; then NaN and never logged (the tail of MLflow's order)


def metric_order_phases(filter_string: str, order_by: list[str] | None) -> list[str] | None:
    """When the first sort key is a metric, the MLflow filters that list its runs with
    finite values first, then +inf, then -inf (each in the order asked); the fourth phase,
    NaN and never logged, is the tail of MLflow's own order and takes `filter_string` as
    is. None when the order is not by a metric (or the filter leaves no room for the two
    extra conditions): MLflow's own order is right then.

    Why: MLflow stores ±inf as ±1.797e308 and sorts them as numbers, so a DESC sort by
    loss would show the runs that diverged to +inf first; NaN and runs without the metric
    it already puts last in both directions (checked against mlflow server 3.17)."""
    if not order_by:
        return None
    match = _METRIC_ORDER.match(order_by[0])
    if match is None:
        return None
    text = filter_string.strip()
    if text and len(_AND.split(text)) > _MAX_USER_CLAUSES_FOR_PHASES:
        return None
    key = match.group(1)

    def with_filter(clause: str) -> str:
        return f"{text} and {clause}" if text else clause

    return [
        with_filter(f"{key} > -{_MLFLOW_MAX} and {key} < {_MLFLOW_MAX}"),
        with_filter(f"{key} >= {_MLFLOW_MAX}"),
        with_filter(f"{key} <= -{_MLFLOW_MAX}"),
        text,
    ]


def _mlflow_token(offset: int) -> str:
    # MLflow's own run-search token (mlflow.utils.search_utils.SearchUtils.create_page_token).
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode() if offset else ""


def phased_token(phase: int, offset: int, base: int) -> str:
    """Plinth's page token for a metric-ordered list: the phase (0..3, see
    metric_order_phases), the offset within it, and how many runs the earlier phases held
    (where the fourth phase starts in MLflow's own order)."""
    return base64.b64encode(json.dumps({"phase": phase, "offset": offset, "base": base}).encode()).decode()


def _read_phased_token(token: str) -> tuple[int, int, int]:
    if not token:
        return 0, 0, 0
    decoded = json.loads(base64.b64decode(token))
    if "phase" not in decoded:  # a token from before the list was ordered by a metric
        raise InvalidInput.field("page_token", "That page token belongs to another order; start from page one.")
    return int(decoded["phase"]), int(decoded["offset"]), int(decoded["base"])


def _search_phased(
    experiment_id: str, phases: list[str], order_by: list[str], page_token: str, max_results: int
) -> tuple[list[dict[str, Any]], str]:
    phase, offset, base = _read_phased_token(page_token)
    found: list[dict[str, Any]] = []
    while len(found) < max_results and phase < _PHASES:
        want = max_results - len(found)
        start = offset if phase < _PHASES - 1 else base + offset
        raw, more = gateway().search_runs(
            [experiment_id], phases[phase], order_by=order_by, max_results=want, page_token=_mlflow_token(start)
        )
        found.extend(raw)
        if more:
            offset += len(raw)
            continue
        if phase < _PHASES - 1:
            base += offset + len(raw)
        phase, offset = phase + 1, 0
    return found, (phased_token(phase, offset, base) if phase < _PHASES else "")


def search_project_runs(
    project: Project,
    *,
    filter_string: str = "",
    order_by: list[str] | None = None,
    page_token: str = "",
    max_results: int = DEFAULT_PAGE_SIZE,
) -> RunPage:
    """One page of the runs of `project`'s experiment, in MLflow's filter syntax. A bad
    filter or order_by is MLflow's 400 (MlflowError); MLflow down is MlflowUnavailable.
    Ordered by a metric, runs with finite values come first and ±inf, NaN and never
    logged after them (metric_order_phases), with Plinth's own page tokens."""
    order = order_by or [DEFAULT_ORDER]
    phases = metric_order_phases(filter_string, order)
    if phases is not None:
        raw, token = _search_phased(project.mlflow_experiment_id, phases, order, page_token, max_results)
    else:
        if page_token and "phase" in json.loads(base64.b64decode(page_token)):
            raise InvalidInput.field("page_token", "That page token belongs to another order; start from page one.")
        raw, token = gateway().search_runs(
            [project.mlflow_experiment_id],
            filter_string,
            order_by=order,
            max_results=max_results,
            page_token=page_token,
        )
    runs = [run for run in map(Run.from_mlflow, raw) if run_in_project(project, run.experiment_id)]
    attach(runs, {project.mlflow_experiment_id: project})
    params = sorted({key for run in runs for key in run.params})
    metrics = sorted({key for run in runs for key in run.latest})
    return RunPage(runs, token, params, metrics)
