"""FakeServing: a small, stateful stand-in for a serving backend at the level of
base.ServingBackend's methods (a FAKE, not a mock). It keeps one model server per revision
(state, endpoint, restarts, log lines), answers predictions from per-version behaviour a
test sets, remembers the traffic split it was given, and reports request metrics from
requests it recorded itself or a test fed it. Every method is idempotent like the real
ones; `down = True` makes every call raise ServingUnavailable, as an unreachable cluster or
host does.

Install it with `install(monkeypatch)` (the `fake_serving` fixture of
tests/deployments/conftest.py does): it replaces what `serving_backend(name)` returns for
every name, so services, views, the API and the rollout all talk to the same instance."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from apps.deployments.models import Deployment, Revision
from apps.deployments.serving.base import (
    Answer,
    MetricsSeries,
    Probe,
    ProbeState,
    RevisionMetrics,
    ServingUnavailable,
)


@dataclass
class FakeServer:
    """One revision's model server as the fake sees it."""

    revision_id: int
    version: int
    state: ProbeState = "starting"
    message: str = ""
    endpoint: str = ""
    starts: int = 0
    log: list[str] = field(default_factory=list)


@dataclass
class Recorded:
    """One request the fake answered (or a test fed in): when, status, latency in ms."""

    at: datetime
    status: int
    latency_ms: float


def _percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` percentile (0 < q ≤ 1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


class FakeServing:
    """A faithful in-memory ServingBackend (see the module docstring).

    Behaviour per model version, set by a test before the revision starts:
    - `fail_versions[v] = message`: the model server cannot come up (probe → failed);
    - `slow_versions`: probe stays "starting" (a model that takes forever to load);
    - `answers[v] = (status, body)`: what predict returns (default 200 with predictions
      `[v]` per request, so a test can tell which version answered);
    - `latency_ms[v]`: the latency predict reports for that version (default 3 ms);
    - `requirements[v]`: the requirement lines MLflow logged with the model (its
      requirements.txt; default: none logged, nothing to check);
    - `run_environments[run id]`: the run's `plinth.environment` tag (default none).
    The last two stand in for MLflow's files and run tags, read by the pre-flight
    (apps.deployments.environment), which `install` points at this fake."""

    name = "fake"

    def __init__(self) -> None:
        self.servers: dict[int, FakeServer] = {}
        self.traffic: dict[int, dict[int, int]] = {}  # deployment id → {revision id: percent}
        self.deleted: set[int] = set()  # deployment ids
        self.requests: dict[int, list[Recorded]] = {}  # revision id → requests
        self.fail_versions: dict[int, str] = {}
        self.slow_versions: set[int] = set()
        self.answers: dict[int, tuple[int, bytes]] = {}
        self.latency_ms: dict[int, float] = {}
        self.requirements: dict[int, list[str]] = {}
        self.run_environments: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.down = False

    # -- helpers for tests ---------------------------------------------------------------
    def _call(self, what: str) -> None:
        self.calls[what] += 1
        if self.down:
            raise ServingUnavailable("The serving backend is unreachable (fake: down).")

    def crash(self, revision: Revision) -> None:
        """The revision's model server process dies (probe → crashed until started again)."""
        server = self.servers[revision.pk]
        server.state = "crashed"
        server.log.append("killed")

    def feed(
        self, revision: Revision, status: int, latency_ms: float, count: int = 1, at: datetime | None = None
    ) -> None:
        """Record `count` requests to `revision` answered with `status` in `latency_ms`
        (as the gateway would), at `at` (default now)."""
        when = at or timezone.now()
        self.requests.setdefault(revision.pk, []).extend(Recorded(when, status, latency_ms) for _ in range(count))

    def running(self) -> list[int]:
        """Revision ids whose model server runs (or is starting)."""
        return sorted(pk for pk, s in self.servers.items() if s.state in ("starting", "up"))

    # -- ServingBackend -------------------------------------------------------------------
    def start(self, revision: Revision) -> None:
        self._call("start")
        server = self.servers.get(revision.pk)
        if server is not None and server.state in ("starting", "up"):
            return  # idempotent: already running
        if server is None:
            server = FakeServer(revision_id=revision.pk, version=revision.version)
            self.servers[revision.pk] = server
        server.starts += 1
        server.endpoint = f"http://fake-serving.invalid/r{revision.pk}"
        server.log.append(f"starting model version {revision.version}")
        if revision.version in self.fail_versions:
            server.state = "failed"
            server.message = self.fail_versions[revision.version]
            server.log.append(server.message)
        elif revision.version in self.slow_versions:
            server.state = "starting"
        else:
            server.state = "up"
            server.log.append("listening")

    def probe(self, revision: Revision) -> Probe:
        self._call("probe")
        server = self.servers.get(revision.pk)
        if server is None:
            return Probe("gone")
        return Probe(server.state, server.message, server.endpoint if server.state == "up" else "")

    def predict(self, revision: Revision, body: bytes, content_type: str = "application/json") -> Answer:
        self._call("predict")
        server = self.servers.get(revision.pk)
        if server is None or server.state != "up":
            raise ServingUnavailable(f"The model server of revision {revision.number} is not running.")
        latency = self.latency_ms.get(revision.version, 3.0)
        if revision.version in self.answers:
            status, answer = self.answers[revision.version]
        else:
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                status, answer = 400, b'{"error_code": "BAD_REQUEST", "message": "Invalid JSON input"}'
            else:
                rows = _row_count(parsed)
                status, answer = 200, json.dumps({"predictions": [revision.version] * rows}).encode()
        self.feed(revision, status, latency)
        return Answer(status=status, body=answer, content_type="application/json", latency_ms=latency)

    def set_traffic(self, deployment: Deployment, split: Mapping[int, int]) -> None:
        self._call("set_traffic")
        if split and sum(split.values()) != 100:
            raise ValueError(f"a traffic split sums to 100, not {sum(split.values())}: {dict(split)}")
        self.traffic[deployment.pk] = dict(split)

    def stop(self, revision: Revision) -> None:
        self._call("stop")
        server = self.servers.get(revision.pk)
        if server is not None:
            server.state = "gone"
            server.log.append("stopped")

    def delete(self, deployment: Deployment) -> None:
        self._call("delete")
        for revision_id in list(deployment.revisions.values_list("pk", flat=True)):
            server = self.servers.get(revision_id)
            if server is not None:
                server.state = "gone"
        self.traffic.pop(deployment.pk, None)
        self.deleted.add(deployment.pk)

    def logs(self, revision: Revision, tail: int = 200) -> str:
        self._call("logs")
        server = self.servers.get(revision.pk)
        return "\n".join(server.log[-tail:]) if server else ""

    def metrics(self, revisions: Sequence[Revision], since: datetime) -> dict[int, RevisionMetrics]:
        self._call("metrics")
        out: dict[int, RevisionMetrics] = {}
        for revision in revisions:
            seen = [r for r in self.requests.get(revision.pk, []) if r.at >= since]
            latencies = [r.latency_ms for r in seen]
            out[revision.pk] = RevisionMetrics(
                revision_id=revision.pk,
                requests=len(seen),
                errors_4xx=sum(1 for r in seen if 400 <= r.status < 500),
                errors_5xx=sum(1 for r in seen if r.status >= 500),
                p50_ms=_percentile(latencies, 0.50),
                p95_ms=_percentile(latencies, 0.95),
                p99_ms=_percentile(latencies, 0.99),
            )
        return out

    def series(self, revisions: Sequence[Revision], since: datetime) -> dict[int, MetricsSeries]:
        self._call("series")
        start = since.replace(second=0, microsecond=0)
        end = timezone.now().replace(second=0, microsecond=0)
        minutes: list[datetime] = []
        t = start
        while t <= end:
            minutes.append(t)
            t += timedelta(minutes=1)
        out: dict[int, MetricsSeries] = {}
        for revision in revisions:
            seen = [r for r in self.requests.get(revision.pk, []) if r.at >= since]
            series = MetricsSeries(revision_id=revision.pk)
            for minute in minutes:
                bucket = [r for r in seen if minute <= r.at < minute + timedelta(minutes=1)]
                latencies = [r.latency_ms for r in bucket]
                series.t.append(minute)
                series.requests.append(len(bucket))
                series.errors.append(sum(1 for r in bucket if r.status >= 500))
                series.p50_ms.append(_percentile(latencies, 0.50))
                series.p95_ms.append(_percentile(latencies, 0.95))
                series.p99_ms.append(_percentile(latencies, 0.99))
            out[revision.pk] = series
        return out


def _row_count(body: object) -> int:
    """How many rows a request in MLflow's scoring protocol carries (1 when unsure)."""
    if isinstance(body, dict):
        if isinstance(body.get("dataframe_split"), dict):
            return len(body["dataframe_split"].get("data") or []) or 1
        for key in ("dataframe_records", "instances", "inputs"):
            value = body.get(key)
            if isinstance(value, list):
                return len(value) or 1
    return 1


def install(monkeypatch: pytest.MonkeyPatch) -> FakeServing:
    """One FakeServing answers for every backend name for the rest of the test, in every
    module of the deployments app that imported `serving_backend` (services, views, the
    API, the rollout, tasks) as well as in apps.deployments.serving.registry itself."""
    from apps.deployments import environment
    from apps.deployments.serving import registry

    fake = FakeServing()
    monkeypatch.setattr(environment, "model_requirements", lambda name, version: fake.requirements.get(version))
    monkeypatch.setattr(environment, "recorded_label", lambda run_id: fake.run_environments.get(run_id, ""))
    original = registry.serving_backend

    def backend(name: str) -> FakeServing:
        return fake

    backend.is_fake_serving = True  # type: ignore[attr-defined]
    # A module first imported while an earlier test's fake was installed holds that fake's
    # function: it is replaced as well as the original.
    for module_name, module in list(sys.modules.items()):
        found = getattr(module, "serving_backend", None) if module_name.startswith("apps.deployments") else None
        if found is not None and (found is original or getattr(found, "is_fake_serving", False)):
            monkeypatch.setattr(module, "serving_backend", backend)
    if registry.serving_backend is not original:  # left over: never expected, but be sure
        original = registry.serving_backend
    monkeypatch.setattr(registry, "serving_backend", backend)
    return fake
