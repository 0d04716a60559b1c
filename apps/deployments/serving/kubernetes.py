"""The `kubernetes` serving backend: one KServe InferenceService per deployment.

The InferenceService is named after the deployment, lives in the project's namespace and
serves the pinned model version (`modelFormat: mlflow`, `protocolVersion: v2`, storageUri =
the version's artifacts resolved through the MLflow registry). How Plinth revisions map onto
KServe's canary rollout (`canaryTrafficPercent`) is described in `apps.deployments.kserve`;
every cluster call goes through the rate-limited KubeGateway.

Predictions. KServe serves `modelFormat: mlflow` with MLServer's MLflow runtime, which
answers the v2 protocol (`/v2/models/<name>/infer`) and, besides it, MLflow's own scoring
protocol at `/invocations`. `predict` sends the body it is given (MLflow's scoring protocol:
dataframe_split, dataframe_records, inputs, instances) unchanged to
`<revision URL>/invocations`, so callers speak the same protocol on both backends.

Metrics come from Prometheus (PLINTH_PROMETHEUS_URL, the same settings as the GPU metrics),
which scrapes the Knative queue-proxy in front of every predictor pod (Serverless mode):

- requests: `revision_request_count`, as
  `sum by (revision_name) (increase(revision_request_count{namespace_name="<ns>",
  revision_name=~"<names>"}[W]))` — W is the window (since → now), or 60 s a point in `series`;
- 5xx and 4xx: the same with `response_code_class="5xx"` or `"4xx"`;
- p50/p95/p99 in ms: `revision_request_latencies_bucket`, as
  `histogram_quantile(0.95, sum by (revision_name, le) (increase(
  revision_request_latencies_bucket{namespace_name="<ns>", revision_name=~"<names>"}[W])))`.

All figures go in one request: each expression tagged with a `plinth_figure` label by
`label_replace`, joined with `or` (as the GPU metrics do).

`revision_name` is the Knative revision; Plinth knows which one each of its revisions is from
the InferenceService (the `plinth.dev/knative-revisions` annotation and the predictor status).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings

from apps.compute.base import BackendUnavailable
from apps.compute.k8s.gateway import KubeCustomObjects, KubeGateway
from apps.compute.k8s.status import newest
from apps.core.errors import Conflict, InvalidInput, NotFound
from apps.core.numbers import finite_or_none
from apps.deployments import kserve
from apps.deployments.serving.base import Answer, MetricsSeries, Probe, RevisionMetrics, ServingUnavailable
from apps.registry.mlflow import RegistryGateway

if TYPE_CHECKING:
    from apps.deployments.models import Deployment, Revision

logger = logging.getLogger(__name__)

# Schemes KServe's storage initializer can download from.
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://", "hf://", "oci://")
REQUESTS_METRIC = "revision_request_count"
LATENCY_METRIC = "revision_request_latencies_bucket"
TAG = "plinth_figure"
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


# --- where the pinned version's artifacts are ---------------------------------------------------
class ArtifactLocator(RegistryGateway):
    """The registry gateway, plus the two reads that turn a model version into the URI of its
    artifacts (MLflow 3 registers logged models: a version's source is `models:/<model id>`)."""

    def logged_model_artifact_uri(self, model_id: str) -> str:
        body = self._call("GET", f"logged-models/{model_id}")
        return str(((body.get("model") or {}).get("info") or {}).get("artifact_uri") or "")

    def run_artifact_uri(self, run_id: str) -> str:
        return str((self.get_run(run_id).get("info") or {}).get("artifact_uri") or "")

    def storage_uri(self, model_name: str, version: int) -> str:
        """The storageUri for KServe of `model_name` version `version`.

        Raises NotFound (no such version), InvalidInput (artifacts KServe cannot download:
        a local file path, or mlflow-artifacts:/ without PLINTH_KSERVE_ARTIFACTS_DESTINATION),
        MlflowUnavailable (503)."""
        found = self.get_model_version(model_name, version)
        if found is None:
            raise NotFound(f"Model {model_name} has no version {version} in MLflow.")
        location = str(found.get("storage_location") or "")
        uri = location if location and not location.startswith(("models:/", "runs:/")) else str(found.get("source"))
        if uri.startswith("models:/"):
            model_id = str(found.get("model_id") or uri.removeprefix("models:/").split("/", 1)[0])
            uri = self.logged_model_artifact_uri(model_id)
        elif uri.startswith("runs:/"):
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            uri = self.run_artifact_uri(run_id).rstrip("/") + (f"/{path}" if path else "")
        if uri.startswith("mlflow-artifacts:"):
            destination = str(settings.PLINTH_KSERVE_ARTIFACTS_DESTINATION or "").rstrip("/")
            if not destination:
                raise InvalidInput.field(
                    "model",
                    f"Version {version} of {model_name} is stored behind the MLflow server ({uri}); set "
                    "PLINTH_KSERVE_ARTIFACTS_DESTINATION to the server's --artifacts-destination so KServe "
                    "can download it.",
                )
            path = uri.removeprefix("mlflow-artifacts:")
            if path.startswith("//"):  # mlflow-artifacts://host:port/path
                path = "/" + path[2:].partition("/")[2]
            uri = f"{destination}/{path.lstrip('/')}"
        if not uri.startswith(STORAGE_SCHEMES):
            raise InvalidInput.field(
                "model",
                f"Version {version} of {model_name} is stored at {uri or 'an unknown place'}, which KServe "
                f"cannot download; it reads {', '.join(STORAGE_SCHEMES)}.",
            )
        return uri


def registry_storage_uri(revision: Revision) -> str:
    """The storageUri of the revision's pinned model version, from MLflow's registry."""
    return ArtifactLocator().storage_uri(revision.deployment.model_name, revision.version)


# --- Prometheus -------------------------------------------------------------------------------------
class ServingPrometheus:
    """Instant and range queries against the Prometheus the GPU metrics use
    (PLINTH_PROMETHEUS_URL, _TOKEN, _TIMEOUT). Errors become ServingUnavailable."""

    def __init__(self, url: str, *, token: str = "", timeout: float = 10.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()

    @classmethod
    def from_settings(cls) -> ServingPrometheus:
        url = str(settings.PLINTH_PROMETHEUS_URL or "").strip()
        if not url:
            raise ServingUnavailable(
                "Request metrics of KServe deployments come from Prometheus: set PLINTH_PROMETHEUS_URL."
            )
        return cls(
            url,
            token=str(settings.PLINTH_PROMETHEUS_TOKEN or ""),
            timeout=float(settings.PLINTH_PROMETHEUS_TIMEOUT),
        )

    def _post(self, path: str, data: dict[str, str], result_type: str) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.session.post(f"{self.url}{path}", data=data, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServingUnavailable(f"Prometheus at {self.url} could not be reached: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise ServingUnavailable(
                f"Prometheus at {self.url} answered HTTP {response.status_code}, not JSON"
            ) from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise ServingUnavailable(
                f"Prometheus refused the query (HTTP {response.status_code}): {body.get('error', '')}"
            )
        payload = body.get("data") or {}
        if payload.get("resultType") != result_type:
            raise ServingUnavailable(f"Prometheus answered a {payload.get('resultType')!r}, not a {result_type}")
        return list(payload.get("result") or [])

    def query(self, promql: str, at: datetime) -> list[dict[str, Any]]:
        """An instant query's vector at `at`."""
        return self._post("/api/v1/query", {"query": promql, "time": f"{at.timestamp():.3f}"}, "vector")

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: int) -> list[dict[str, Any]]:
        """A range query's matrix, one point every `step_seconds` from `start` to `end`."""
        data = {
            "query": promql,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": str(step_seconds),
        }
        return self._post("/api/v1/query_range", data, "matrix")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def build_metrics_query(namespace: str, knative_names: Sequence[str], window_seconds: int) -> str:
    """One PromQL expression for every figure of the given Knative revisions over the window,
    each series tagged with `plinth_figure` (requests, 5xx, 4xx, p50, p95, p99) and joined
    with `or` (see the module docstring's table)."""
    names = "|".join(sorted({n.replace(".", "\\\\.") for n in knative_names}))
    match = f'namespace_name="{_quote(namespace)}", revision_name=~"{names}"'
    window = f"[{max(int(window_seconds), 60)}s]"
    counts = {
        "requests": f"{REQUESTS_METRIC}{{{match}}}",
        "5xx": f'{REQUESTS_METRIC}{{{match}, response_code_class="5xx"}}',
        "4xx": f'{REQUESTS_METRIC}{{{match}, response_code_class="4xx"}}',
    }
    parts = [
        f'label_replace(sum by (revision_name) (increase({selector}{window})), "{TAG}", "{tag}", "", "")'
        for tag, selector in counts.items()
    ]
    for tag, quantile in QUANTILES.items():
        parts.append(
            f"label_replace(histogram_quantile({quantile}, sum by (revision_name, le) "
            f'(increase({LATENCY_METRIC}{{{match}}}{window}))), "{TAG}", "{tag}", "", "")'
        )
    return " or ".join(parts)


# --- the backend --------------------------------------------------------------------------------
class KServeServing:
    """Deployments as KServe InferenceServices (see the module docstring and
    apps.deployments.kserve for the revision mapping). Cluster errors come out as
    ServingUnavailable (503, retried by the reconciler) or BackendRejected (409: the API
    server refused the request for good)."""

    name = "kubernetes"

    def __init__(
        self,
        gateway: KubeCustomObjects | None = None,
        *,
        storage_uri: Callable[[Revision], str] | None = None,
        session: requests.Session | None = None,
        prometheus: ServingPrometheus | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.gateway: KubeCustomObjects = gateway if gateway is not None else KubeGateway()
        self.storage_uri = storage_uri or registry_storage_uri
        self.session = session or requests.Session()
        self._prometheus = prometheus
        self.clock = clock or (lambda: datetime.now(UTC))

    # --- cluster plumbing -------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(kserve.GROUP, kserve.VERSION, *args)
        except BackendUnavailable as exc:
            raise ServingUnavailable(exc.message) from exc

    def _get(self, deployment: Deployment) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call(
            self.gateway.get_custom_object, deployment.project.namespace, kserve.PLURAL, deployment.name
        )
        return found

    def _patch(self, deployment: Deployment, patch: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] | None = self._call(
            self.gateway.patch_custom_object, deployment.project.namespace, kserve.PLURAL, deployment.name, patch
        )
        if found is None:
            raise Conflict(f"The InferenceService {deployment.name} is gone; start the deployment again.")
        return found

    def _apply(
        self,
        deployment: Deployment,
        isvc: dict[str, Any],
        *,
        latest: int,
        stable: int,
        predictor: dict[str, Any] | None = None,
        canary: int | bool | None = False,
    ) -> dict[str, Any]:
        """Patch the InferenceService: a new predictor spec (replacing the old one exactly),
        or only the canary share (`canary`: an int sets it, None removes it, False leaves it),
        with the annotations naming its latest and stable revision."""
        h = kserve.held(isvc)
        knative = dict(h.knative)
        seen = kserve.knative_revision_of_latest(isvc)
        if seen and h.latest is not None:
            knative[h.latest] = seen
        spec_patch: dict[str, Any] = {}
        old = (isvc.get("spec") or {}).get("predictor") or {}
        if predictor is not None:
            kserve.check_predictor(predictor)
            spec_patch = _replacing(old, predictor)
        elif canary is not False:
            spec_patch = {"canaryTrafficPercent": canary}
        patch: dict[str, Any] = {"metadata": {"annotations": kserve.revision_annotations(latest, stable, knative)}}
        if spec_patch:
            patch["spec"] = {"predictor": spec_patch}
        return self._patch(deployment, patch)

    def _predictor_of(self, revision: Revision, canary: int | None = None) -> dict[str, Any]:
        return kserve.build_predictor(revision, self.storage_uri(revision), canary)

    def _serving_other_than(self, revision: Revision) -> bool:
        from apps.deployments.models import RevisionStatus

        return (
            revision.deployment.revisions.filter(status=RevisionStatus.SERVING, traffic__gt=0)
            .exclude(pk=revision.pk)
            .exists()
        )

    # --- ServingBackend ---------------------------------------------------------------------
    def start(self, revision: Revision) -> None:
        """Put the revision in the deployment's InferenceService: create it for a first
        revision; else make it the predictor's spec with canaryTrafficPercent 0 (no traffic
        until set_traffic). Idempotent. Raises ServingUnavailable, BackendRejected,
        InvalidInput/NotFound (the version's artifacts cannot be located), MlflowUnavailable."""
        deployment = revision.deployment
        namespace = deployment.project.namespace
        isvc = self._get(deployment)
        if isvc is None:
            manifest = kserve.build_inference_service(revision, self.storage_uri(revision))
            if self._call(self.gateway.create_custom_object, namespace, kserve.PLURAL, manifest):
                return
            isvc = self._get(deployment)  # made by a concurrent call after our read
            if isvc is None:
                raise ServingUnavailable(f"The InferenceService {deployment.name} appeared and vanished; retrying.")
        h = kserve.held(isvc)
        number = revision.number
        if number == h.latest:
            canary = h.canary_percent if h.latest != h.stable else None
            self._apply(
                deployment,
                isvc,
                latest=number,
                stable=h.stable or number,
                predictor=self._predictor_of(revision, canary),
            )
        elif number == h.stable:
            return  # KServe still routes to it: nothing to start
        elif h.stable is None or not self._serving_other_than(revision):
            # Nothing serves yet (the first revision failed): this one simply replaces it.
            self._apply(deployment, isvc, latest=number, stable=number, predictor=self._predictor_of(revision))
        else:
            self._apply(deployment, isvc, latest=number, stable=h.stable, predictor=self._predictor_of(revision, 0))

    def probe(self, revision: Revision) -> Probe:
        """See kserve.probe_revision. Raises ServingUnavailable."""
        return kserve.probe_revision(self._get(revision.deployment), revision.number)

    def predict(self, revision: Revision, body: bytes, content_type: str = "application/json") -> Answer:
        """POST `body` (MLflow's scoring protocol) to the revision's `/invocations` and return
        the model server's answer as it is. Raises ServingUnavailable when the revision has
        no reachable URL or the connection fails."""
        probe = self.probe(revision)
        if probe.state != "up" or not probe.endpoint:
            raise ServingUnavailable(
                f"Revision {revision.number} of {revision.deployment.name} does not answer yet ({probe.state}"
                + (f": {probe.message})" if probe.message else ")")
            )
        url = probe.endpoint.rstrip("/") + "/invocations"
        timeout = float(settings.PLINTH_KSERVE_PREDICT_TIMEOUT)
        started = time.perf_counter()
        try:
            response = self.session.post(url, data=body, headers={"Content-Type": content_type}, timeout=timeout)
        except requests.RequestException as exc:
            raise ServingUnavailable(f"{url} could not be reached: {type(exc).__name__}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return Answer(
            status=response.status_code,
            body=response.content,
            content_type=response.headers.get("Content-Type", "application/json"),
            latency_ms=latency_ms,
        )

    def set_traffic(self, deployment: Deployment, split: Mapping[int, int]) -> None:
        """Apply {revision id: percent} through canaryTrafficPercent (see apps.deployments.kserve).
        Raises InvalidInput (not 100 in all, or a revision of another deployment), Conflict (a
        split KServe cannot express: two revisions that are not its latest and stable ones,
        or no InferenceService), ServingUnavailable."""
        from apps.deployments.models import Revision

        if any(int(p) < 0 or int(p) > 100 for p in split.values()) or sum(int(p) for p in split.values()) != 100:
            raise InvalidInput.field("traffic", f"A traffic split sums to 100 %; got {dict(split)}.")
        revisions = {r.pk: r for r in Revision.objects.filter(deployment=deployment, pk__in=list(split))}
        unknown = sorted(set(split) - set(revisions))
        if unknown:
            raise InvalidInput.field("traffic", f"No revision {unknown[0]} in deployment {deployment.name}.")
        shares = {revisions[pk].number: int(p) for pk, p in split.items() if int(p) > 0}
        isvc = self._get(deployment)
        if isvc is None:
            raise Conflict(f"The deployment {deployment.name} has no InferenceService yet; start a revision first.")
        h = kserve.held(isvc)
        if len(shares) == 2:
            if h.latest == h.stable or set(shares) != {h.latest, h.stable}:
                raise Conflict(
                    f"KServe splits traffic between its latest revision ({h.latest}) and the last one rolled "
                    f"out ({h.stable}) only; asked for {sorted(shares)}."
                )
            assert h.latest is not None and h.stable is not None
            self._apply(deployment, isvc, latest=h.latest, stable=h.stable, canary=shares[h.latest])
            return
        (target,) = shares
        if target == h.latest == h.stable:
            return  # already all its own
        if target == h.latest:  # promote: KServe rolls the latest out to 100 %
            self._apply(deployment, isvc, latest=target, stable=target, canary=None)
        elif target == h.stable:  # roll back a canary
            assert h.latest is not None
            self._apply(deployment, isvc, latest=h.latest, stable=target, canary=0)
        else:  # back to a revision KServe no longer holds: restore its spec
            revision = next(r for r in revisions.values() if r.number == target)
            self._apply(deployment, isvc, latest=target, stable=target, predictor=self._predictor_of(revision))

    def stop(self, revision: Revision) -> None:
        """Take the revision out of the InferenceService (idempotent): the last revision →
        the InferenceService is deleted; a canary → the stable spec is put back (0 % canary);
        a revision KServe no longer holds → nothing to do. Stopping the stable revision while
        a canary is in play is a Conflict (roll back or promote first)."""
        deployment = revision.deployment
        isvc = self._get(deployment)
        h = kserve.held(isvc)
        number = revision.number
        if isvc is None or number not in (h.latest, h.stable):
            return
        if h.latest == h.stable:
            self.delete(deployment)
            return
        assert h.stable is not None
        if number == h.stable:
            raise Conflict(f"Revision {number} takes the stable traffic; promote or roll back the canary first.")
        from apps.deployments.models import Revision as RevisionModel

        stable = RevisionModel.objects.filter(deployment=deployment, number=h.stable).first()
        if stable is None:
            raise Conflict(f"Revision {h.stable} of {deployment.name} is gone from Plinth; delete the deployment.")
        self._apply(deployment, isvc, latest=h.stable, stable=h.stable, predictor=self._predictor_of(stable, 0))

    def delete(self, deployment: Deployment) -> None:
        """Delete the deployment's InferenceService (gone already is fine)."""
        self._call(self.gateway.delete_custom_object, deployment.project.namespace, kserve.PLURAL, deployment.name)

    def logs(self, revision: Revision, tail: int = 200) -> str:
        """The model container's last `tail` lines in the revision's newest predictor pod."""
        deployment = revision.deployment
        namespace = deployment.project.namespace
        selector = f"{kserve.LABEL_ISVC}={deployment.name},{kserve.LABEL_REVISION}={revision.number}"
        try:
            pod = newest(self.gateway.list_pods(namespace, selector))
            if pod is None:
                return ""
            return self.gateway.read_pod_log(namespace, pod["metadata"]["name"], tail, container=kserve.MODEL_CONTAINER)
        except BackendUnavailable as exc:
            raise ServingUnavailable(exc.message) from exc

    # --- metrics ----------------------------------------------------------------------------
    def _prom(self) -> ServingPrometheus:
        return self._prometheus if self._prometheus is not None else ServingPrometheus.from_settings()

    def _knative_names(self, revisions: Sequence[Revision]) -> dict[str, int]:
        """{Knative revision name: Plinth revision id} for the given revisions (one deployment
        read per deployment)."""
        names: dict[str, int] = {}
        by_deployment: dict[int, list[Revision]] = {}
        for revision in revisions:
            by_deployment.setdefault(revision.deployment_id, []).append(revision)
        for group in by_deployment.values():
            isvc = self._get(group[0].deployment)
            if isvc is None:
                continue
            h = kserve.held(isvc)
            known = dict(h.knative)
            latest_name = kserve.knative_revision_of_latest(isvc)
            if latest_name and h.latest is not None:
                known[h.latest] = latest_name
            predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
            if h.stable is not None and h.stable != h.latest and predictor.get("latestRolledoutRevision"):
                known.setdefault(h.stable, str(predictor["latestRolledoutRevision"]))
            for revision in group:
                if revision.number in known:
                    names[known[revision.number]] = revision.pk
        return names

    def metrics(self, revisions: Sequence[Revision], since: datetime) -> dict[int, RevisionMetrics]:
        """Requests, 4xx, 5xx and latency percentiles per revision since `since`, from
        Prometheus (see the module docstring). A revision Prometheus knows nothing of has
        zero requests. Raises ServingUnavailable (no Prometheus configured, or unreachable)."""
        revisions = list(revisions)
        result = {r.pk: RevisionMetrics(revision_id=r.pk) for r in revisions}
        names = self._knative_names(revisions)
        if not names:
            return result
        now = self.clock()
        window = math.ceil((now - since).total_seconds())
        namespace = revisions[0].deployment.project.namespace
        vector = self._prom().query(build_metrics_query(namespace, list(names), window), now)
        figures: dict[int, dict[str, float | None]] = {pk: {} for pk in result}
        for item in vector:
            labels = item.get("metric") or {}
            pk = names.get(labels.get("revision_name", ""))
            if pk is None:
                continue
            figures[pk][labels.get(TAG, "")] = finite_or_none((item.get("value") or [None, None])[1])
        for pk, found in figures.items():
            requests_ = round(found.get("requests") or 0)
            result[pk] = RevisionMetrics(
                revision_id=pk,
                requests=requests_,
                errors_4xx=round(found.get("4xx") or 0),
                errors_5xx=round(found.get("5xx") or 0),
                p50_ms=found.get("p50") if requests_ else None,
                p95_ms=found.get("p95") if requests_ else None,
                p99_ms=found.get("p99") if requests_ else None,
            )
        return result

    def series(self, revisions: Sequence[Revision], since: datetime) -> dict[int, MetricsSeries]:
        """Per-minute requests, 5xx and p50/p95/p99 per revision since `since` (one range query,
        step 60 s, each point the minute that ends at it). Raises ServingUnavailable."""
        revisions = list(revisions)
        result = {r.pk: MetricsSeries(revision_id=r.pk) for r in revisions}
        names = self._knative_names(revisions)
        if not names:
            return result
        end = self.clock().replace(second=0, microsecond=0)
        start = min(since.replace(second=0, microsecond=0) + timedelta(minutes=1), end)
        namespace = revisions[0].deployment.project.namespace
        matrix = self._prom().query_range(build_metrics_query(namespace, list(names), 60), start, end, 60)
        points: dict[int, dict[float, dict[str, float | None]]] = {pk: {} for pk in result}
        for item in matrix:
            labels = item.get("metric") or {}
            pk = names.get(labels.get("revision_name", ""))
            if pk is None:
                continue
            for stamp, value in item.get("values") or []:
                points[pk].setdefault(float(stamp), {})[labels.get(TAG, "")] = finite_or_none(value)
        for pk, by_time in points.items():
            series = result[pk]
            for stamp in sorted(by_time):
                found = by_time[stamp]
                count = round(found.get("requests") or 0)
                series.t.append(datetime.fromtimestamp(stamp, UTC) - timedelta(minutes=1))
                series.requests.append(count)
                series.errors.append(round(found.get("5xx") or 0))
                series.p50_ms.append(found.get("p50") if count else None)
                series.p95_ms.append(found.get("p95") if count else None)
                series.p99_ms.append(found.get("p99") if count else None)
        return result


def _replacing(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that turns `old` into exactly `new` (keys only in `old` → null)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            patch[key] = _replacing(previous, value)
        else:
            patch[key] = value
    return patch
