"""The kubernetes serving backend: KServe InferenceService manifests checked strictly, status
mapped from recorded InferenceServices, the rollout's calls played on the stateful fake
cluster (with KServe's controller played by KServeController), the fake and kmock agreeing
on custom objects, and request metrics from recorded Prometheus answers."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jsonschema
import kubernetes_validate
import pytest
import requests
from kubernetes import client
from referencing import Registry, Resource

from apps.accounts.models import User
from apps.compute.base import BackendRejected
from apps.compute.k8s import KubeGateway, RateLimiter
from apps.core.errors import Conflict, InvalidInput
from apps.deployments import kserve
from apps.deployments.models import Deployment, Revision, RevisionStatus
from apps.deployments.serving.base import ServingUnavailable
from apps.deployments.serving.kubernetes import ArtifactLocator, KServeServing, ServingPrometheus
from apps.projects.models import Project
from tests.compute.fakes import SCHEMA_VERSION, FakeKubeGateway, KServeController
from tests.compute.kmock_server import Emulator
from tests.conftest import _free_port

pytestmark = pytest.mark.django_db

NS = "plinth-demo-demo"
FIXTURES = Path(__file__).parent / "fixtures" / "kserve"


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def storage(revision: Revision) -> str:
    return f"s3://mlflow/1/models/m-{revision.version:04d}/artifacts"


class Answering(requests.adapters.BaseAdapter):
    """A requests transport that answers from a function instead of the network, and keeps
    what was sent."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], tuple[int, bytes]]) -> None:
        super().__init__()
        self.answer = answer
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        status, body = self.answer(request)
        response = requests.Response()
        response.status_code, response._content = status, body
        response.headers["Content-Type"] = "application/json"
        response.url, response.request = str(request.url), request
        return response

    def close(self) -> None:
        pass


def session_with(adapter: Answering) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


@pytest.fixture
def deployment(project: Project, ada: User) -> Deployment:
    return Deployment.objects.create(
        project=project,
        name="digits",
        model_name="demo/demo/digits",
        backend="kubernetes",
        created_by=ada,
        resources={"cpu": "1", "memory": "2Gi"},
        min_replicas=1,
        max_replicas=2,
    )


def revision(deployment: Deployment, number: int, version: int, **fields: Any) -> Revision:
    return Revision.objects.create(deployment=deployment, number=number, version=version, **fields)


# --- the manifest, checked strictly ------------------------------------------------------------
def core_valid(value: dict[str, Any], schema_file: str) -> None:
    """Valid against kubernetes-validate's strict schema of that core type (no unknown fields)."""
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{SCHEMA_VERSION}-local-strict"
    schema = json.loads((base / schema_file).read_text())
    definitions = json.loads((base / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(value)


def test_the_manifest_says_what_the_deployment_asks_for(deployment: Deployment) -> None:
    first = revision(deployment, 1, 3)
    manifest = kserve.build_inference_service(first, storage(first))
    kserve.check_inference_service(manifest)
    assert (manifest["apiVersion"], manifest["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("digits", NS)
    assert meta["labels"] == {
        "plinth.dev/project": "demo",
        "plinth.dev/team": "demo",
        "plinth.dev/managed": "true",
        "plinth.dev/deployment": str(deployment.pk),
    }
    assert meta["annotations"]["plinth.dev/revision"] == meta["annotations"]["plinth.dev/stable-revision"] == "1"
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["storageUri"] == "s3://mlflow/1/models/m-0003/artifacts"
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 2)
    assert predictor["labels"]["plinth.dev/revision"] == "1"
    assert predictor["labels"]["plinth.dev/model-version"] == "3"
    assert "canaryTrafficPercent" not in predictor
    core_valid(meta, "objectmeta-meta-v1.json")
    core_valid(predictor["model"]["resources"], "resourcerequirements-v1.json")


def test_a_gpu_deployment_asks_for_whole_gpus_on_the_right_nodes(deployment: Deployment) -> None:
    deployment.resources = {"cpu": "4", "memory": "16Gi", "gpus": 1, "gpu_product": "NVIDIA-A100-SXM4-80GB"}
    deployment.save()
    predictor = kserve.build_predictor(revision(deployment, 1, 1), "s3://m/1", canary_traffic_percent=10)
    kserve.check_predictor(predictor)
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert predictor["canaryTrafficPercent"] == 10
    for toleration in predictor["tolerations"]:
        core_valid(toleration, "toleration-v1.json")


def test_a_typo_in_a_field_name_is_refused_with_its_path(deployment: Deployment) -> None:
    manifest = kserve.build_inference_service(revision(deployment, 1, 1), "s3://m/1")
    manifest["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    with pytest.raises(kserve.ManifestError) as caught:
        kserve.check_inference_service(manifest)
    assert caught.value.problems == ["spec.predictor.canaryTrafficPercnt: unknown field"]


PREDICTOR, MODEL = ("spec", "predictor"), ("spec", "predictor", "model")
NOT_A_PROTOCOL = "spec.predictor.model.protocolVersion: 'v3' is not one of 'v1', 'v2', 'grpc-v2'"


@pytest.mark.parametrize(
    ("where", "change", "problem"),
    [
        (("metadata",), {"labelz": {}}, "metadata.labelz: unknown field"),
        ((*MODEL, "resources"), {"limit": {}}, "spec.predictor.model.resources.limit: unknown field"),
        (PREDICTOR, {"minReplicas": "1"}, "spec.predictor.minReplicas: expected an integer, got '1'"),
        (
            PREDICTOR,
            {"canaryTrafficPercent": True},
            "spec.predictor.canaryTrafficPercent: expected an integer, got True",
        ),
        (MODEL, {"protocolVersion": "v3"}, NOT_A_PROTOCOL),
        (("spec",), {"predictr": {}}, "spec.predictr: unknown field"),
    ],
)
def test_unknown_fields_and_wrong_types_are_refused_anywhere(
    deployment: Deployment, where: tuple[str, ...], change: dict[str, Any], problem: str
) -> None:
    manifest = kserve.build_inference_service(revision(deployment, 1, 1), "s3://m/1")
    target = manifest
    for key in where:
        target = target[key]
    target.update(change)
    with pytest.raises(kserve.ManifestError) as caught:
        kserve.check_inference_service(manifest)
    assert caught.value.problems == [problem]


def test_a_missing_storage_uri_is_refused(deployment: Deployment) -> None:
    manifest = kserve.build_inference_service(revision(deployment, 1, 1), "s3://m/1")
    del manifest["spec"]["predictor"]["model"]["storageUri"]
    with pytest.raises(kserve.ManifestError, match=r"spec\.predictor\.model\.storageUri: required field missing"):
        kserve.check_inference_service(manifest)


@pytest.mark.parametrize("name", ["ready", "revision_missing", "model_load_failed", "canary_10_90"])
def test_the_recorded_services_fit_the_schema(name: str) -> None:
    found = recorded(name)
    kserve.check_inference_service({key: value for key, value in found.items() if key != "status"})


# --- the status, from recorded InferenceServices ----------------------------------------------------
def test_a_ready_service_is_up_at_its_url() -> None:
    probe = kserve.probe_revision(recorded("ready"), 1)
    assert (probe.state, probe.endpoint) == ("up", "http://digits-plinth-demo-demo.example.com")
    assert kserve.observed_split(recorded("ready")) == {1: 100}


def test_a_revision_that_cannot_start_is_failed_with_knatives_reason() -> None:
    probe = kserve.probe_revision(recorded("revision_missing"), 1)
    assert probe.state == "failed"
    assert probe.message.startswith("RevisionFailed: ")
    assert "No module named 'xgboost'" in probe.message
    assert "RevisionMissing" in probe.message


def test_a_model_that_does_not_load_is_failed_with_kserves_reason() -> None:
    probe = kserve.probe_revision(recorded("model_load_failed"), 1)
    assert probe.state == "failed"
    assert probe.message.startswith("ModelLoadFailed: Model digits failed to load")


def test_a_canary_split_maps_to_both_revisions_with_their_own_urls() -> None:
    isvc = recorded("canary_10_90")
    assert kserve.observed_split(isvc) == {2: 10, 1: 90}
    canary, stable = kserve.probe_revision(isvc, 2), kserve.probe_revision(isvc, 1)
    assert (canary.state, canary.endpoint) == ("up", "http://latest-digits-predictor-plinth-demo-demo.example.com")
    assert (stable.state, stable.endpoint) == ("up", "http://prev-digits-predictor-plinth-demo-demo.example.com")
    assert kserve.probe_revision(isvc, 3).state == "gone"


def test_a_spec_kserve_has_not_seen_yet_is_starting_not_ready() -> None:
    isvc = recorded("ready")
    isvc["metadata"]["generation"] = 2  # patched; the controller still reports generation 1
    assert kserve.probe_revision(isvc, 1).state == "starting"
    assert kserve.probe_revision(None, 1).state == "gone"


def test_readiness_unknown_is_starting() -> None:
    isvc = recorded("ready")
    for condition in isvc["status"]["conditions"]:
        condition.update({"status": "Unknown", "reason": "RevisionMissing"})
    assert kserve.probe_revision(isvc, 1).state == "starting"


# --- the backend on the fake cluster ------------------------------------------------------------------
@pytest.fixture
def cluster() -> FakeKubeGateway:
    return FakeKubeGateway()


@pytest.fixture
def controller(cluster: FakeKubeGateway) -> KServeController:
    return KServeController(cluster)


@pytest.fixture
def backend(cluster: FakeKubeGateway) -> KServeServing:
    return KServeServing(cluster, storage_uri=storage)


def stored(cluster: FakeKubeGateway) -> dict[str, Any]:
    return cluster.custom[(kserve.GROUP, kserve.VERSION, kserve.PLURAL, NS)]["digits"]


def serve(rev: Revision, traffic: int) -> None:
    Revision.objects.filter(pk=rev.pk).update(status=RevisionStatus.SERVING, traffic=traffic)


def test_a_rollout_canary_promote_and_retire_on_the_fake(
    deployment: Deployment, backend: KServeServing, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    first = revision(deployment, 1, 1)
    assert backend.probe(first).state == "gone"
    backend.start(first)
    backend.start(first)  # idempotent
    assert cluster.calls["create_custom_object"] == 1
    assert backend.probe(first).state == "starting"
    controller.ready(NS, "digits")
    assert backend.probe(first).state == "up"
    serve(first, 100)

    second = revision(deployment, 2, 2)
    backend.start(second)
    spec = stored(cluster)["spec"]["predictor"]
    assert spec["canaryTrafficPercent"] == 0
    assert spec["model"]["storageUri"] == "s3://mlflow/1/models/m-0002/artifacts"
    assert backend.probe(second).state == "starting"
    controller.ready(NS, "digits")
    assert backend.probe(second).endpoint == "http://latest-digits-predictor-plinth-demo-demo.example.com"
    assert kserve.observed_split(stored(cluster)) == {1: 100}  # pre-flight: no traffic yet

    backend.set_traffic(deployment, {first.pk: 90, second.pk: 10})
    controller.ready(NS, "digits")
    assert stored(cluster)["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert kserve.observed_split(stored(cluster)) == {1: 90, 2: 10}

    backend.set_traffic(deployment, {first.pk: 0, second.pk: 100})
    controller.ready(NS, "digits")
    assert "canaryTrafficPercent" not in stored(cluster)["spec"]["predictor"]
    assert kserve.observed_split(stored(cluster)) == {2: 100}
    assert backend.probe(first).state == "gone"  # KServe keeps only the new one in play
    backend.stop(first)  # retiring it after the rollback window: nothing left to do on the cluster
    assert stored(cluster)["spec"]["predictor"]["model"]["storageUri"].endswith("m-0002/artifacts")
    assert json.loads(stored(cluster)["metadata"]["annotations"][kserve.ANNOTATION_KNATIVE]) == {
        "1": "digits-predictor-00001",
        "2": "digits-predictor-00002",
    }


def test_a_canary_rolled_back_takes_no_traffic_and_is_stopped(
    deployment: Deployment, backend: KServeServing, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    first, second = revision(deployment, 1, 1), revision(deployment, 2, 2)
    backend.start(first)
    controller.ready(NS, "digits")
    serve(first, 100)
    backend.start(second)
    backend.set_traffic(deployment, {first.pk: 90, second.pk: 10})
    controller.ready(NS, "digits")

    backend.set_traffic(deployment, {first.pk: 100, second.pk: 0})
    controller.ready(NS, "digits")
    assert stored(cluster)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert kserve.observed_split(stored(cluster)) == {1: 100}
    with pytest.raises(Conflict):
        backend.stop(first)  # the stable side cannot go while the canary is in play

    backend.stop(second)
    predictor = stored(cluster)["spec"]["predictor"]
    assert predictor["model"]["storageUri"].endswith("m-0001/artifacts")  # the stable spec is back
    assert predictor["canaryTrafficPercent"] == 0
    assert backend.probe(second).state == "gone"
    controller.ready(NS, "digits")
    assert backend.probe(first).state == "up"
    assert kserve.observed_split(stored(cluster)) == {1: 100}


def test_a_rollback_after_promotion_restores_the_older_spec(
    deployment: Deployment, backend: KServeServing, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    first, second = revision(deployment, 1, 1), revision(deployment, 2, 2)
    backend.start(first)
    controller.ready(NS, "digits")
    serve(first, 100)
    backend.start(second)
    controller.ready(NS, "digits")
    backend.set_traffic(deployment, {second.pk: 100})
    controller.ready(NS, "digits")

    backend.set_traffic(deployment, {first.pk: 100, second.pk: 0})
    predictor = stored(cluster)["spec"]["predictor"]
    assert predictor["model"]["storageUri"].endswith("m-0001/artifacts")
    assert "canaryTrafficPercent" not in predictor
    assert predictor["labels"]["plinth.dev/revision"] == "1"
    assert backend.probe(first).state == "starting"  # a fresh Knative revision of the old spec
    controller.ready(NS, "digits")
    assert backend.probe(first).state == "up"
    assert backend.probe(second).state == "gone"


def test_splits_kserve_cannot_express_are_refused_before_any_change(
    deployment: Deployment, backend: KServeServing, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    first, second, third = revision(deployment, 1, 1), revision(deployment, 2, 2), revision(deployment, 3, 3)
    with pytest.raises(Conflict):
        backend.set_traffic(deployment, {first.pk: 100})  # nothing in the cluster yet
    backend.start(first)
    controller.ready(NS, "digits")
    serve(first, 100)
    backend.start(second)
    before = copy.deepcopy(stored(cluster))
    with pytest.raises(InvalidInput):
        backend.set_traffic(deployment, {first.pk: 50, second.pk: 10})
    with pytest.raises(Conflict):
        backend.set_traffic(deployment, {first.pk: 50, third.pk: 50})
    other = Deployment.objects.create(
        project=deployment.project, name="other", model_name="m", backend="kubernetes", created_by=deployment.created_by
    )
    with pytest.raises(InvalidInput):
        backend.set_traffic(deployment, {revision(other, 1, 1).pk: 100})
    assert stored(cluster) == before


def test_a_first_revision_that_failed_is_replaced_by_the_next(
    deployment: Deployment, backend: KServeServing, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    first = revision(deployment, 1, 1)
    backend.start(first)
    controller.model_load_failed(NS, "digits", "No module named 'xgboost'")
    assert backend.probe(first).state == "failed"
    Revision.objects.filter(pk=first.pk).update(status=RevisionStatus.FAILED)
    second = revision(deployment, 2, 2)
    backend.start(second)
    predictor = stored(cluster)["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor  # nothing serves: no canary to hold back
    controller.ready(NS, "digits")
    assert backend.probe(second).state == "up"
    assert backend.probe(first).state == "gone"


def test_stopping_the_last_revision_deletes_the_service_and_delete_is_idempotent(
    deployment: Deployment, backend: KServeServing, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    first = revision(deployment, 1, 1)
    backend.start(first)
    controller.ready(NS, "digits")
    backend.stop(first)
    assert "digits" not in cluster.custom[(kserve.GROUP, kserve.VERSION, kserve.PLURAL, NS)]
    backend.stop(first)
    backend.delete(deployment)
    assert cluster.calls["delete_custom_object"] == 2


def test_a_typo_never_reaches_the_cluster(deployment: Deployment, cluster: FakeKubeGateway) -> None:
    manifest = kserve.build_inference_service(revision(deployment, 1, 1), "s3://m/1")
    manifest["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    with pytest.raises(BackendRejected, match="canaryTrafficPercnt: unknown field"):
        cluster.create_custom_object(kserve.GROUP, kserve.VERSION, NS, kserve.PLURAL, manifest)


def test_the_cluster_down_is_serving_unavailable(deployment: Deployment, cluster: FakeKubeGateway) -> None:
    from apps.compute.base import BackendUnavailable

    cluster.outage = BackendUnavailable("The Kubernetes API server could not be reached")
    with pytest.raises(ServingUnavailable):
        KServeServing(cluster, storage_uri=storage).probe(revision(deployment, 1, 1))


def test_logs_come_from_the_model_container_of_the_revisions_pod(
    deployment: Deployment, backend: KServeServing, controller: KServeController
) -> None:
    first = revision(deployment, 1, 1)
    backend.start(first)
    controller.ready(NS, "digits")
    controller.add_predictor_pod(NS, "digits", 1, "line 1\nline 2\nmodel loaded\n")
    assert backend.logs(first, tail=2) == "line 2\nmodel loaded\n"
    assert backend.logs(revision(deployment, 2, 2)) == ""


def test_predict_posts_the_scoring_body_to_the_revisions_invocations(
    deployment: Deployment, cluster: FakeKubeGateway, controller: KServeController
) -> None:
    adapter = Answering(lambda request: (200, b'{"predictions": [3]}'))
    backend = KServeServing(cluster, storage_uri=storage, session=session_with(adapter))
    first = revision(deployment, 1, 1)
    backend.start(first)
    with pytest.raises(ServingUnavailable):
        backend.predict(first, b"{}")  # not up yet: nothing is sent
    assert adapter.sent == []
    controller.ready(NS, "digits")
    body = b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}'
    answer = backend.predict(first, body)
    assert (answer.status, answer.body) == (200, b'{"predictions": [3]}')
    (sent,) = adapter.sent
    assert sent.url == "http://digits-plinth-demo-demo.example.com/invocations"
    assert (sent.body, sent.headers["Content-Type"]) == (body, "application/json")


# --- the fake and kmock agree on custom objects ---------------------------------------------------------
@pytest.fixture
def emulator() -> Iterator[Emulator]:
    running = Emulator()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(params=["fake", "kmock"])
def api(request: pytest.FixtureRequest) -> Any:
    if request.param == "fake":
        return FakeKubeGateway()
    emulator: Emulator = request.getfixturevalue("emulator")
    return KubeGateway(emulator.api_client(), limiter=RateLimiter(1000), timeout=5)


def test_the_fake_and_kmock_honour_the_same_custom_object_contract(api: Any, deployment: Deployment) -> None:
    args = (kserve.GROUP, kserve.VERSION, NS, kserve.PLURAL)
    manifest = kserve.build_inference_service(revision(deployment, 1, 1), "s3://m/1")
    assert api.get_custom_object(*args, "digits") is None
    assert api.create_custom_object(*args, manifest) is True
    assert api.create_custom_object(*args, manifest) is False  # 409 AlreadyExists
    assert api.get_custom_object(*args, "digits")["spec"] == manifest["spec"]
    patched = api.patch_custom_object(*args, "digits", {"spec": {"predictor": {"canaryTrafficPercent": 10}}})
    assert patched["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patched["spec"]["predictor"]["model"] == manifest["spec"]["predictor"]["model"]  # merged, not replaced
    removed = api.patch_custom_object(*args, "digits", {"spec": {"predictor": {"canaryTrafficPercent": None}}})
    assert "canaryTrafficPercent" not in removed["spec"]["predictor"]
    assert api.patch_custom_object(*args, "nothing", {"metadata": {"labels": {"a": "b"}}}) is None
    assert api.delete_custom_object(*args, "digits") is True
    assert api.delete_custom_object(*args, "digits") is False
    assert api.get_custom_object(*args, "digits") is None


def test_the_backend_over_http_against_kmock(deployment: Deployment, emulator: Emulator) -> None:
    gateway = KubeGateway(emulator.api_client(), limiter=RateLimiter(1000), timeout=5)
    backend = KServeServing(gateway, storage_uri=storage)
    first = revision(deployment, 1, 1)
    backend.start(first)
    assert backend.probe(first).state == "starting"
    # KServe's controller, played through the real client: the recorded ready status.
    custom = client.CustomObjectsApi(emulator.api_client())
    status = recorded("ready")["status"]
    custom.patch_namespaced_custom_object_status(
        kserve.GROUP, kserve.VERSION, NS, kserve.PLURAL, "digits", {"status": status}, _preload_content=False
    )
    assert backend.probe(first) == kserve.probe_revision(recorded("ready"), 1)
    serve(first, 100)
    second = revision(deployment, 2, 2)
    backend.start(second)
    backend.set_traffic(deployment, {first.pk: 90, second.pk: 10})
    found = gateway.get_custom_object(kserve.GROUP, kserve.VERSION, NS, kserve.PLURAL, "digits")
    assert found is not None
    assert found["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert found["spec"]["predictor"]["model"]["storageUri"].endswith("m-0002/artifacts")
    assert found["metadata"]["annotations"][kserve.ANNOTATION_STABLE] == "1"
    backend.delete(deployment)
    assert gateway.get_custom_object(kserve.GROUP, kserve.VERSION, NS, kserve.PLURAL, "digits") is None
    methods = [(r.method, r.url.path) for r in emulator.requests() if "inferenceservices" in str(r.url.path)]
    assert ("POST", f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices") in methods
    assert ("PATCH", f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/digits") in methods


# --- metrics from Prometheus (recorded answers) ---------------------------------------------------------
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def vector(figures: dict[tuple[str, str], float]) -> bytes:
    result = [
        {"metric": {"revision_name": name, "plinth_figure": tag}, "value": [NOW.timestamp(), str(value)]}
        for (name, tag), value in figures.items()
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


@pytest.fixture
def canary_cluster(deployment: Deployment, cluster: FakeKubeGateway) -> tuple[Revision, Revision]:
    first, second = revision(deployment, 1, 1), revision(deployment, 2, 2)
    cluster.custom[(kserve.GROUP, kserve.VERSION, kserve.PLURAL, NS)]["digits"] = recorded("canary_10_90")
    return first, second


def test_metrics_are_read_per_knative_revision_with_one_query(
    deployment: Deployment, cluster: FakeKubeGateway, canary_cluster: tuple[Revision, Revision]
) -> None:
    first, second = canary_cluster
    answer = vector({
        ("digits-predictor-00001", "requests"): 900.0, ("digits-predictor-00001", "5xx"): 0.0,
        ("digits-predictor-00001", "4xx"): 12.0, ("digits-predictor-00001", "p50"): 8.5,
        ("digits-predictor-00001", "p95"): 40.0, ("digits-predictor-00001", "p99"): 95.0,
        ("digits-predictor-00002", "requests"): 99.6, ("digits-predictor-00002", "5xx"): 31.2,
        ("digits-predictor-00002", "p50"): 12.0, ("digits-predictor-00002", "p95"): 480.0,
        ("digits-predictor-00002", "p99"): "NaN",  # type: ignore[dict-item]
        ("digits-predictor-00009", "requests"): 5.0,  # not one of ours
    })  # fmt: skip
    adapter = Answering(lambda request: (200, answer))
    prometheus = ServingPrometheus("http://prometheus:9090", session=session_with(adapter))
    backend = KServeServing(cluster, storage_uri=storage, prometheus=prometheus, clock=lambda: NOW)

    found = backend.metrics([first, second], NOW - timedelta(minutes=5))
    assert (found[first.pk].requests, found[first.pk].errors_4xx, found[first.pk].errors_5xx) == (900, 12, 0)
    assert (found[first.pk].p50_ms, found[first.pk].p95_ms, found[first.pk].p99_ms) == (8.5, 40.0, 95.0)
    assert (found[second.pk].requests, found[second.pk].errors_5xx) == (100, 31)
    assert found[second.pk].error_rate == pytest.approx(0.31)
    assert (found[second.pk].p95_ms, found[second.pk].p99_ms) == (480.0, None)
    (sent,) = adapter.sent
    assert sent.url == "http://prometheus:9090/api/v1/query"
    form = parse_qs(str(sent.body))
    query = form["query"][0]
    assert 'namespace_name="plinth-demo-demo"' in query
    assert 'revision_name=~"digits-predictor-00001|digits-predictor-00002"' in query
    assert "increase(revision_request_count{" in query and "[300s]" in query
    assert 'response_code_class="5xx"' in query
    assert "histogram_quantile(0.95, sum by (revision_name, le) (increase(revision_request_latencies_bucket{" in query
    assert float(form["time"][0]) == NOW.timestamp()


def test_series_are_per_minute_from_one_range_query(
    deployment: Deployment, cluster: FakeKubeGateway, canary_cluster: tuple[Revision, Revision]
) -> None:
    first, second = canary_cluster
    stamps = [NOW.timestamp() - 120, NOW.timestamp() - 60, NOW.timestamp()]
    result = [
        {"metric": {"revision_name": "digits-predictor-00002", "plinth_figure": "requests"},
         "values": [[stamps[0], "10"], [stamps[1], "0"], [stamps[2], "20"]]},
        {"metric": {"revision_name": "digits-predictor-00002", "plinth_figure": "5xx"},
         "values": [[stamps[0], "1"], [stamps[1], "0"], [stamps[2], "4"]]},
        {"metric": {"revision_name": "digits-predictor-00002", "plinth_figure": "p95"},
         "values": [[stamps[0], "120"], [stamps[2], "250"]]},
    ]  # fmt: skip
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
    adapter = Answering(lambda request: (200, body))
    prometheus = ServingPrometheus("http://prometheus:9090", session=session_with(adapter))
    backend = KServeServing(cluster, storage_uri=storage, prometheus=prometheus, clock=lambda: NOW)

    series = backend.series([first, second], NOW - timedelta(minutes=3))
    canary = series[second.pk]
    assert canary.t == [NOW - timedelta(minutes=3), NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)]
    assert (canary.requests, canary.errors) == ([10, 0, 20], [1, 0, 4])
    assert canary.p95_ms == [120.0, None, 250.0]
    assert series[first.pk].t == []
    form = parse_qs(str(adapter.sent[0].body))
    assert adapter.sent[0].url == "http://prometheus:9090/api/v1/query_range"
    assert (form["step"], float(form["end"][0])) == (["60"], NOW.timestamp())


def test_metrics_without_prometheus_or_with_it_down_are_unavailable(
    deployment: Deployment, cluster: FakeKubeGateway, canary_cluster: tuple[Revision, Revision], settings: Any
) -> None:
    settings.PLINTH_PROMETHEUS_URL = ""
    backend = KServeServing(cluster, storage_uri=storage, clock=lambda: NOW)
    with pytest.raises(ServingUnavailable, match="PLINTH_PROMETHEUS_URL"):
        backend.metrics(list(canary_cluster), NOW - timedelta(minutes=5))
    refusing = Answering(lambda request: (400, b'{"status": "error", "error": "parse error"}'))
    prometheus = ServingPrometheus("http://prometheus:9090", session=session_with(refusing))
    backend = KServeServing(cluster, storage_uri=storage, prometheus=prometheus, clock=lambda: NOW)
    with pytest.raises(ServingUnavailable, match="parse error"):
        backend.series(list(canary_cluster), NOW - timedelta(minutes=5))


# --- where the artifacts are -----------------------------------------------------------------------------
def mlflow_answering(version: dict[str, Any], logged: dict[str, str] | None = None) -> ArtifactLocator:
    def answer(request: requests.PreparedRequest) -> tuple[int, bytes]:
        path = str(request.path_url)
        if "model-versions/get" in path:
            return 200, json.dumps({"model_version": version}).encode()
        if "logged-models/" in path:
            model_id = path.rsplit("/", 1)[-1]
            uri = (logged or {}).get(model_id)
            if uri is None:
                return 404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"}'
            return 200, json.dumps({"model": {"info": {"model_id": model_id, "artifact_uri": uri}}}).encode()
        return 404, b"{}"

    locator = ArtifactLocator(base_url="http://mlflow:5000")
    locator.session = session_with(Answering(answer))
    return locator


def test_a_logged_models_artifacts_are_the_storage_uri() -> None:
    locator = mlflow_answering(
        {"name": "digits", "version": "2", "source": "models:/m-abc", "model_id": "m-abc"},
        {"m-abc": "s3://mlflow/1/models/m-abc/artifacts"},
    )
    assert locator.storage_uri("digits", 2) == "s3://mlflow/1/models/m-abc/artifacts"


def test_artifacts_behind_the_mlflow_server_need_its_destination(settings: Any) -> None:
    version = {"name": "digits", "version": "2", "source": "models:/m-abc", "model_id": "m-abc"}
    logged = {"m-abc": "mlflow-artifacts:/1/models/m-abc/artifacts"}
    settings.PLINTH_KSERVE_ARTIFACTS_DESTINATION = ""
    with pytest.raises(InvalidInput, match="PLINTH_KSERVE_ARTIFACTS_DESTINATION"):
        mlflow_answering(version, logged).storage_uri("digits", 2)
    settings.PLINTH_KSERVE_ARTIFACTS_DESTINATION = "s3://plinth-artifacts/"
    assert (
        mlflow_answering(version, logged).storage_uri("digits", 2) == "s3://plinth-artifacts/1/models/m-abc/artifacts"
    )


def test_a_local_file_kserve_cannot_read_is_refused() -> None:
    locator = mlflow_answering({"name": "digits", "version": "1", "source": "file:///var/mlruns/1/abc/artifacts/model"})
    with pytest.raises(InvalidInput, match="cannot download"):
        locator.storage_uri("digits", 1)


# --- metrics from a REAL Prometheus scraping a queue-proxy's metrics --------------------------------------
PROMETHEUS = os.environ.get("PLINTH_PROMETHEUS_BIN", "/usr/bin/prometheus")
# Per scrape, each Knative revision counts this many more requests: (2xx, 5xx), and their
# latencies fall in the histogram's buckets (ms upper bound → count) in this proportion.
PER_SCRAPE = {
    "digits-predictor-00001": ((9, 0), {5: 0, 10: 6, 25: 9, 50: 9}),
    "digits-predictor-00002": ((7, 3), {5: 0, 10: 0, 25: 2, 50: 10}),
}


class QueueProxyExporter:
    """An HTTP server (a thread) serving Knative queue-proxy metrics in Prometheus' text
    format; every scrape adds PER_SCRAPE to the counters, so the ratios are exact."""

    def __init__(self) -> None:
        self.scrapes = 0
        lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    exporter.scrapes += 1
                    body = exporter.render(exporter.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def render(n: int) -> str:
        lines = ["# TYPE revision_request_count counter", "# TYPE revision_request_latencies histogram"]
        for name, ((ok, failed), buckets) in PER_SCRAPE.items():
            base = (
                f'namespace_name="{NS}",configuration_name="digits-predictor",revision_name="{name}",'
                'service_name="digits-predictor",container_name="queue-proxy"'
            )
            for code, cls, count in (("200", "2xx", ok), ("500", "5xx", failed)):
                labels = f'{base},response_code="{code}",response_code_class="{cls}"'
                lines.append(f"revision_request_count{{{labels}}} {count * n}")
            for le, count in buckets.items():
                lines.append(f'revision_request_latencies_bucket{{{base},le="{le}"}} {count * n}')
            lines.append(f'revision_request_latencies_bucket{{{base},le="+Inf"}} {(ok + failed) * n}')
            lines.append(f"revision_request_latencies_count{{{base}}} {(ok + failed) * n}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(PROMETHEUS).exists() and not shutil.which("prometheus"):
        reason = f"{PROMETHEUS} is missing (apt-get install prometheus)"
        if os.environ.get("PLINTH_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"PLINTH_REQUIRE_PROMETHEUS=1 but {reason}")
        pytest.skip(reason)
    binary = PROMETHEUS if Path(PROMETHEUS).exists() else str(shutil.which("prometheus"))
    exporter = QueueProxyExporter()
    root = tmp_path_factory.mktemp("prometheus-kserve")
    (root / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: queue-proxy\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(
                    f"{url}/api/v1/query",
                    params={"query": "count_over_time(revision_request_count[1m]) >= 4"},
                    timeout=5,
                ).json()
                if len(answer["data"]["result"]) == 4:  # 2 revisions x 2 codes, each scraped 4 times
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "prometheus did not scrape the exporter:\n" + (root / "prometheus.log").read_text()[-3000:]
                )
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        exporter.close()


def test_the_promql_against_a_real_prometheus(
    prometheus_url: str, cluster: FakeKubeGateway, canary_cluster: tuple[Revision, Revision], settings: Any
) -> None:
    settings.PLINTH_PROMETHEUS_URL = prometheus_url
    first, second = canary_cluster
    backend = KServeServing(cluster, storage_uri=storage)
    found = backend.metrics([first, second], datetime.now(UTC) - timedelta(minutes=1))
    stable, canary = found[first.pk], found[second.pk]
    assert stable.requests > 0 and canary.requests > 0
    assert (stable.errors_5xx, stable.error_rate) == (0, 0.0)
    assert canary.error_rate == pytest.approx(0.3, abs=0.02)  # 3 of every 10, whatever the extrapolation
    # The histogram's proportions fix the quantiles: stable's median lies in (5, 10] at 4.5 of 6.
    assert stable.p50_ms == pytest.approx(5 + 5 * 4.5 / 6, rel=0.02)
    assert canary.p95_ms == pytest.approx(25 + 25 * (9.5 - 2) / 8, rel=0.02)
    assert stable.p99_ms is not None and stable.p99_ms <= 25
    series = backend.series([first, second], datetime.now(UTC) - timedelta(minutes=5))  # accepted as PromQL
    assert set(series) == {first.pk, second.pk}
