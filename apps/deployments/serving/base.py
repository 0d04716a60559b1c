"""The contract between the rollout (apps.deployments.rollout) and a serving backend.

A backend runs one model server per revision (local: a process on this host; kubernetes:
a KServe InferenceService whose default/canary predictors are the revisions), tells how
each one is doing, sends a prediction straight to one revision (pre-flight, "try it"),
applies a traffic split, and reports request metrics per revision. Every method is
idempotent: the reconciler calls them again after a crash."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from apps.core.errors import Unavailable

if TYPE_CHECKING:
    from apps.deployments.models import Deployment, Revision


class ServingUnavailable(Unavailable):
    """The serving backend (cluster API, model-server host) cannot be reached: a 503."""


ProbeState = Literal["starting", "up", "crashed", "failed", "gone"]


@dataclass(frozen=True)
class Probe:
    """How a revision's model server is doing.

    starting: not answering yet; up: answers its health check; crashed: its process died
    (the reconciler restarts it and counts the restart); failed: it cannot come up (the model
    does not load, the image cannot be pulled; `message` says why, with the log's tail);
    gone: nothing runs for this revision."""

    state: ProbeState
    message: str = ""
    endpoint: str = ""  # where requests for this revision go, once known


@dataclass(frozen=True)
class Answer:
    """A model server's answer to one request: HTTP status, body bytes, content type,
    latency in milliseconds."""

    status: int
    body: bytes
    content_type: str = "application/json"
    latency_ms: float = 0.0


@dataclass(frozen=True)
class RevisionMetrics:
    """Requests to one revision over a window: counts, 5xx error rate, latency percentiles
    in milliseconds (None when there were no requests)."""

    revision_id: int
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        """5xx / requests (a client's bad input is not the model's error); None without requests."""
        return self.errors_5xx / self.requests if self.requests else None


@dataclass(frozen=True)
class MetricsSeries:
    """Per-minute series of one revision: `t` minute starts (aware), and per minute the
    request count, 5xx count and p50/p95/p99 latency in ms (None for a minute without requests)."""

    revision_id: int
    t: list[datetime] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    p50_ms: list[float | None] = field(default_factory=list)
    p95_ms: list[float | None] = field(default_factory=list)
    p99_ms: list[float | None] = field(default_factory=list)


class ServingBackend(Protocol):
    """Implemented by serving.local.LocalServing and serving.kubernetes.KServeServing;
    `serving.registry.serving_backend(name)` returns the one for `Deployment.backend`.
    Every method may raise ServingUnavailable."""

    name: str

    def start(self, revision: Revision) -> None:
        """Make the revision's model server run (idempotent): local: fetch the pinned
        version's artifacts and start `mlflow models serve`; kubernetes: put the revision in
        the InferenceService (as canary while another revision serves)."""

    def probe(self, revision: Revision) -> Probe:
        """How the revision's model server is doing now (see Probe)."""

    def predict(self, revision: Revision, body: bytes, content_type: str = "application/json") -> Answer:
        """Send one request in MLflow's scoring protocol straight to this revision."""

    def set_traffic(self, deployment: Deployment, split: Mapping[int, int]) -> None:
        """Apply {revision id: percent} (sums to 100). Local: nothing to do (the gateway
        reads the revisions' `traffic`); kubernetes: canaryTrafficPercent / promotion."""

    def stop(self, revision: Revision) -> None:
        """Stop the revision's model server for good (idempotent)."""

    def delete(self, deployment: Deployment) -> None:
        """Remove everything the deployment runs (idempotent)."""

    def logs(self, revision: Revision, tail: int = 200) -> str:
        """The last `tail` lines of the revision's model server log."""

    def metrics(self, revisions: Sequence[Revision], since: datetime) -> dict[int, RevisionMetrics]:
        """Requests per revision since `since` (aware)."""

    def series(self, revisions: Sequence[Revision], since: datetime) -> dict[int, MetricsSeries]:
        """Per-minute request series per revision since `since` (aware)."""
