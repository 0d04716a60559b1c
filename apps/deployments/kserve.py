"""KServe InferenceService manifests for deployments: what Plinth sends, a strict check of it,
and what the cluster's answer means.

The schema. The official KServe Python SDK (`kserve` on PyPI) pins pandas < 3 and
protobuf < 7, which this project's MLflow stack is past, so its typed models are not
installed, and no package ships KServe's CRD OpenAPI schema. The part of
`serving.kserve.io/v1beta1` that Plinth emits is therefore written out below as TypedDicts
(field names and types as in KServe's v1beta1 API reference), and `check_inference_service`
walks a manifest against them strictly: an unknown key anywhere (a typo such as
`canaryTrafficPercnt`), a missing required one or a wrong type is refused with its path. The
Kubernetes core objects inside (ObjectMeta, ResourceRequirements, Toleration) are checked
against the official `kubernetes` client's typed models (their `openapi_types` and
`attribute_map`), just as strictly. The API server checks once more: creates and patches are
sent with `fieldValidation=Strict`.

Revision ↔ KServe (KServe's "Canary rollout strategy" docs,
https://kserve.github.io/website/latest/modelserving/v1beta1/rollout/canary/, and the v1beta1
`canaryTrafficPercent` field): an InferenceService keeps at most two Knative revisions in play, the
latest spec and the last one rolled out with 100 %. Plinth records which of its revisions each
one is in two annotations: `plinth.dev/revision` (the revision whose spec the predictor holds
now) and `plinth.dev/stable-revision` (the revision KServe sends the rest of the traffic to).

- first revision: the InferenceService is created with its spec, no canaryTrafficPercent
  (KServe routes its URL to it once ready; callers reach it through Plinth only after
  pre-flight, when the rollout makes it serve);
- a new revision (start): the predictor spec becomes the new revision's with
  `canaryTrafficPercent: 0` — KServe makes a new Knative revision that takes no traffic but
  answers on its own `latest-` URL (tag routing is on), so pre-flight can call it;
- canary (set_traffic {new: p, stable: 100 - p}): `canaryTrafficPercent: p`;
- promote (set_traffic {new: 100}): canaryTrafficPercent removed, the new revision is stable;
- roll back during a canary (set_traffic {stable: 100}): `canaryTrafficPercent: 0`;
- roll back after a promotion (set_traffic {older: 100}, an older revision KServe no longer
  holds): the older revision's spec is restored without canaryTrafficPercent;
- stop a canary that lost: the stable revision's spec is put back with
  `canaryTrafficPercent: 0`, so the lost revision leaves the traffic table and Knative scales it
  away; stopping a revision KServe no longer holds is a no-op (Knative already scaled it to zero).

KServe honours canaryTrafficPercent only in Serverless mode (Knative); in RawDeployment mode
it is ignored and a new spec replaces the old one at once.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, Required, TypedDict

from apps.compute.k8s.manifests import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_TEAM,
    container_resources,
)
from apps.deployments.serving.base import Probe
from apps.environments.runtime import pod_defaults

if TYPE_CHECKING:
    from apps.deployments.models import Revision

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_DEPLOYMENT = "plinth.dev/deployment"
LABEL_REVISION = "plinth.dev/revision"
LABEL_MODEL_VERSION = "plinth.dev/model-version"
LABEL_ISVC = "serving.kserve.io/inferenceservice"  # set by KServe on the predictor's pods
ANNOTATION_REVISION = "plinth.dev/revision"
ANNOTATION_STABLE = "plinth.dev/stable-revision"
ANNOTATION_KNATIVE = "plinth.dev/knative-revisions"  # {"<plinth revision>": "<knative revision>"}
ANNOTATION_TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
MODEL_CONTAINER = "kserve-container"
MODEL_FORMAT = "mlflow"
PROTOCOL_VERSION = "v2"  # KServe serves modelFormat mlflow with MLServer, which speaks v2


# --- the schema subset Plinth emits (KServe v1beta1) --------------------------------------------
@dataclass(frozen=True)
class Core:
    """Marks a field whose value is a Kubernetes core object, checked against the official
    client's model class of that name (e.g. "V1ResourceRequirements")."""

    model: str


class ModelFormat(TypedDict, total=False):
    name: Required[str]
    version: str


class ModelSpec(TypedDict, total=False):
    modelFormat: Required[ModelFormat]
    protocolVersion: Literal["v1", "v2", "grpc-v2"]
    storageUri: Required[str]
    runtime: str
    # ModelSpec inlines PredictorExtensionSpec, which inlines core/v1 Container: the
    # container's image (overriding the serving runtime's) and environment variables.
    image: str
    env: list[Annotated[dict[str, Any], Core("V1EnvVar")]]
    resources: Annotated[dict[str, Any], Core("V1ResourceRequirements")]


class PredictorSpec(TypedDict, total=False):
    model: Required[ModelSpec]
    minReplicas: int
    maxReplicas: int
    canaryTrafficPercent: int
    labels: dict[str, str]
    annotations: dict[str, str]
    serviceAccountName: str
    nodeSelector: dict[str, str]
    tolerations: list[Annotated[dict[str, Any], Core("V1Toleration")]]
    timeout: int


class InferenceServiceSpec(TypedDict):
    predictor: PredictorSpec


class InferenceService(TypedDict):
    apiVersion: Literal["serving.kserve.io/v1beta1"]
    kind: Literal["InferenceService"]
    metadata: Annotated[dict[str, Any], Core("V1ObjectMeta")]
    spec: InferenceServiceSpec


class ManifestError(ValueError):
    """A manifest that does not fit the schema; `problems` lists each one as "path: what"."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def check_inference_service(manifest: Mapping[str, Any]) -> None:
    """Check an InferenceService manifest (or a merge patch's spec, see `check_predictor`)
    strictly against the schema above. Raises ManifestError naming every unknown field,
    missing required field and wrongly typed value, each with its path
    (e.g. "spec.predictor.canaryTrafficPercnt: unknown field")."""
    problems: list[str] = []
    _check(manifest, InferenceService, "", problems)
    if problems:
        raise ManifestError(problems)


def check_predictor(predictor: Mapping[str, Any]) -> None:
    """Check a predictor spec alone (what a patch sends) strictly; raises ManifestError."""
    problems: list[str] = []
    _check(predictor, PredictorSpec, "spec.predictor", problems)
    if problems:
        raise ManifestError(problems)


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_typeddict(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, dict) and hasattr(kind, "__required_keys__")


def _check(value: Any, kind: Any, path: str, problems: list[str]) -> None:
    """Append to `problems` what is wrong with `value` as a `kind` (a TypedDict, a Core
    marker, a Literal, list[...], dict[str, ...], str/int/bool)."""
    where = path or "the manifest"
    origin = typing.get_origin(kind)
    if origin is Annotated:
        base, *marks = typing.get_args(kind)
        core = next((m for m in marks if isinstance(m, Core)), None)
        if core is not None:
            _check_core(value, core.model, path, problems)
        else:
            _check(value, base, path, problems)
        return
    if _is_typeddict(kind):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        hints = typing.get_type_hints(kind, include_extras=True)
        for key in sorted(set(value) - set(hints)):
            problems.append(f"{_where(path, str(key))}: unknown field")
        for key in sorted(_required_keys(kind, hints) - set(value)):
            problems.append(f"{_where(path, key)}: required field missing")
        for key, item in value.items():
            if key in hints:
                _check(item, _unwrap_required(hints[key]), _where(path, key), problems)
        return
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            problems.append(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        (item_kind,) = typing.get_args(kind)
        for index, item in enumerate(value):
            _check(item, item_kind, f"{path}[{index}]", problems)
        return
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        _, value_kind = typing.get_args(kind)
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{where}: key {key!r} is not a string")
            _check(item, value_kind, _where(path, str(key)), problems)
        return
    if kind is Any:
        return
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
        return
    if kind in (str, bool, float):
        if not isinstance(value, kind) or (kind is float and isinstance(value, bool)):
            problems.append(f"{where}: expected {kind.__name__}, got {value!r}")
        return
    raise TypeError(f"the schema has a type the checker does not know: {kind!r}")  # a bug here, not bad input


def _required_keys(kind: Any, hints: dict[str, Any]) -> set[str]:
    """The required keys of a TypedDict. Computed from the resolved hints: with postponed
    annotations, Python 3.11 does not see Required/NotRequired in `__required_keys__`."""
    required = set()
    for key, hint in hints.items():
        origin = typing.get_origin(hint)
        if origin is Required or (origin is not NotRequired and kind.__total__):
            required.add(key)
    return required


def _unwrap_required(kind: Any) -> Any:
    while typing.get_origin(kind) in (Required, NotRequired):
        (kind,) = typing.get_args(kind)
    return kind


_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str,),
    "date": (str,),
    "object": (object,),
}


def _check_core(value: Any, model: str, path: str, problems: list[str]) -> None:
    """Check `value` strictly against the kubernetes client's model class `model`, whose
    `attribute_map` names the JSON fields and `openapi_types` their types
    ("str", "List[V1Toleration]", "Dict[str, str]", …)."""
    where = path or "the manifest"
    model = model.strip()
    if model.startswith(("List[", "list[")):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        inner = model[model.index("[") + 1 : -1]
        for index, item in enumerate(value):
            _check_core(item, inner, f"{path}[{index}]", problems)
        return
    if model.startswith(("Dict[", "dict(")):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected an object, got {type(value).__name__}")
            return
        inner = model[model.index(",") + 1 : -1]
        for key, item in value.items():
            _check_core(item, inner, _where(path, str(key)), problems)
        return
    if model in _PRIMITIVES:
        allowed = _PRIMITIVES[model]
        if not isinstance(value, allowed) or (model in ("int", "float") and isinstance(value, bool)):
            problems.append(f"{where}: expected {model}, got {value!r}")
        return
    from kubernetes import client

    cls = getattr(client, model, None)
    if cls is None or not hasattr(cls, "attribute_map"):
        raise TypeError(f"the kubernetes client has no model {model!r}")  # a bug here, not bad input
    if not isinstance(value, Mapping):
        problems.append(f"{where}: expected a {model} object, got {type(value).__name__}")
        return
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        attr = by_json.get(key)
        if attr is None:
            problems.append(f"{_where(path, str(key))}: unknown field")
            continue
        _check_core(item, cls.openapi_types[attr], _where(path, key), problems)


# --- building ----------------------------------------------------------------------------------
def service_labels(revision: Revision) -> dict[str, str]:
    """The labels of the InferenceService and of its predictor's pods: those of the launch
    Jobs (project, team, managed) plus the deployment id, revision number and model version."""
    deployment = revision.deployment
    project = deployment.project
    return {
        LABEL_PROJECT: project.slug,
        LABEL_TEAM: project.team.slug,
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT: str(deployment.pk),
        LABEL_REVISION: str(revision.number),
        LABEL_MODEL_VERSION: str(revision.version),
    }


def build_predictor(revision: Revision, storage_uri: str, canary_traffic_percent: int | None = None) -> dict[str, Any]:
    """The predictor spec serving `revision`: modelFormat mlflow, protocol v2, the pinned
    version's artifacts at `storage_uri`, the deployment's resources (CPU/memory requests =
    limits, whole GPUs) and replicas; `canaryTrafficPercent` only when given (0 to 100).

    The revision's environment (`revision.environment`, None: none recorded) adds, only
    where it sets them: its image (`model.image`, in place of the serving runtime's) and
    its pod defaults — env variables on the model container, its node selector and
    tolerations on the predictor pod. The deployment's own needs win on a clash (the GPU
    model's node label; the GPU toleration is always there with GPUs)."""
    deployment = revision.deployment
    env = revision.environment
    defaults = pod_defaults(env)
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "protocolVersion": PROTOCOL_VERSION,
        "storageUri": storage_uri,
    }
    if env is not None and env.image:
        model["image"] = env.image
    if defaults["env"]:
        model["env"] = [{"name": name, "value": value} for name, value in sorted(defaults["env"].items())]
    resources = container_resources(deployment.resources or {})
    if resources:
        model["resources"] = resources
    predictor: dict[str, Any] = {
        "model": model,
        "minReplicas": int(deployment.min_replicas),
        "maxReplicas": max(int(deployment.max_replicas), int(deployment.min_replicas)),
        "labels": service_labels(revision),
    }
    node_selector = dict(defaults["node_selector"])
    tolerations = list(defaults["tolerations"])
    gpus = int((deployment.resources or {}).get("gpus") or 0)
    if gpus > 0:
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
        gpu_product = str((deployment.resources or {}).get("gpu_product") or "")
        if gpu_product:
            node_selector[GPU_PRODUCT_LABEL] = gpu_product
    if tolerations:
        predictor["tolerations"] = tolerations
    if node_selector:
        predictor["nodeSelector"] = node_selector
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = int(canary_traffic_percent)
    return predictor


def revision_annotations(latest: int, stable: int, knative: Mapping[int, str] | None = None) -> dict[str, str]:
    """The annotations recording which Plinth revision is KServe's latest spec and which its
    stable (last rolled out) one, and the Knative revision names seen so far."""
    annotations = {
        ANNOTATION_TAG_ROUTING: "true",
        ANNOTATION_REVISION: str(latest),
        ANNOTATION_STABLE: str(stable),
    }
    if knative:
        annotations[ANNOTATION_KNATIVE] = json.dumps({str(k): v for k, v in sorted(knative.items())})
    return annotations


def build_inference_service(revision: Revision, storage_uri: str) -> dict[str, Any]:
    """The InferenceService created for a deployment's first revision: named after the
    deployment, in its project's namespace, checked with check_inference_service (raises
    ManifestError, a bug if it ever does)."""
    deployment = revision.deployment
    labels = service_labels(revision)
    del labels[LABEL_REVISION], labels[LABEL_MODEL_VERSION]  # the service outlives revisions
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": deployment.name,
            "namespace": deployment.project.namespace,
            "labels": labels,
            "annotations": revision_annotations(revision.number, revision.number),
        },
        "spec": {"predictor": build_predictor(revision, storage_uri)},
    }
    check_inference_service(manifest)
    return manifest


# --- reading the status back -----------------------------------------------------------------------
def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Held:
    """Which Plinth revisions an InferenceService holds: `latest` (its spec now) and `stable`
    (where the non-canary traffic goes); equal when no canary is in play. `knative` maps
    Plinth revision numbers to the Knative revision names recorded so far."""

    latest: int | None
    stable: int | None
    knative: dict[int, str]
    canary_percent: int | None


def held(isvc: Mapping[str, Any] | None) -> Held:
    """What `isvc` holds, from Plinth's annotations and its predictor spec."""
    if not isvc:
        return Held(None, None, {}, None)
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    latest = _int(annotations.get(ANNOTATION_REVISION))
    stable = _int(annotations.get(ANNOTATION_STABLE))
    try:
        raw = json.loads(annotations.get(ANNOTATION_KNATIVE) or "{}")
        knative = {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    except (TypeError, ValueError):
        knative = {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    return Held(latest, stable if stable is not None else latest, knative, _int(predictor.get("canaryTrafficPercent")))


def _conditions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)}


def _predictor_status(status: Mapping[str, Any]) -> dict[str, Any]:
    return dict((status.get("components") or {}).get("predictor") or {})


def _url(status: Mapping[str, Any], tag: str) -> str:
    """The URL that reaches one side of the split: the tagged traffic target's own URL (tag
    routing), else the InferenceService's."""
    for target in _predictor_status(status).get("traffic") or []:
        if target.get("tag") == tag and target.get("url"):
            return str(target["url"])
    return str(status.get("url") or "")


def _model_failure(status: Mapping[str, Any]) -> str:
    """KServe's modelStatus says the model could not load (e.g. ModelLoadFailed)."""
    model_status = status.get("modelStatus") or {}
    states = model_status.get("states") or {}
    failure = model_status.get("lastFailureInfo") or {}
    failed = states.get("targetModelState") == "FailedToLoad" or model_status.get("transitionStatus") in (
        "BlockedByFailedLoad",
        "InvalidSpec",
    )
    if not failed:
        return ""
    reason = failure.get("reason") or model_status.get("transitionStatus") or "FailedToLoad"
    message = failure.get("message") or "the model server could not load the model"
    return f"{reason}: {message}"


def knative_revision_of_latest(isvc: Mapping[str, Any]) -> str:
    """The Knative revision made for the spec the InferenceService holds now, once KServe
    has seen that spec (its observedGeneration caught up); "" before."""
    meta = isvc.get("metadata") or {}
    status = isvc.get("status") or {}
    generation, observed = _int(meta.get("generation")), _int(status.get("observedGeneration"))
    if generation is not None and (observed is None or observed < generation):
        return ""
    return str(_predictor_status(status).get("latestCreatedRevision") or "")


def probe_revision(isvc: Mapping[str, Any] | None, number: int) -> Probe:
    """How Plinth revision `number` is doing in `isvc` (None: no InferenceService):

    gone: not held by the InferenceService (never, or no longer); starting: KServe has not
    seen the spec yet, or its readiness is Unknown; failed: PredictorReady/Ready is False, or
    modelStatus says the model failed to load (the message quotes KServe's reason); up: ready,
    with the URL that reaches this revision (its `latest-`/`prev-` tagged URL while a canary is
    in play, else the InferenceService's URL)."""
    if not isvc:
        return Probe("gone", "no InferenceService")
    h = held(isvc)
    if number not in (h.latest, h.stable):
        return Probe("gone", "the InferenceService no longer holds this revision")
    status = isvc.get("status") or {}
    predictor = _predictor_status(status)
    if number != h.latest:  # the stable side of a canary: the last rolled-out Knative revision
        if predictor.get("latestRolledoutRevision") or predictor.get("previousRolledoutRevision"):
            return Probe("up", endpoint=_url(status, "prev"))
        return Probe("starting", "KServe has not rolled this revision out yet")
    if not knative_revision_of_latest(isvc):
        return Probe("starting", "waiting for KServe to pick up the new spec")
    failure = _model_failure(status)
    if failure:
        return Probe("failed", failure)
    conditions = _conditions(status)
    condition = conditions.get("PredictorReady") or conditions.get("Ready")
    if condition is None:
        return Probe("starting", "KServe reports no readiness yet")
    reason = ": ".join(filter(None, [condition.get("reason", ""), condition.get("message", "")]))
    if condition.get("status") == "False":
        # The configuration's condition says why the revision failed (the route's only that
        # no revision is ready), so it leads the message.
        causes = [
            ": ".join(filter(None, [c.get("reason", ""), c.get("message", "")]))
            for kind, c in conditions.items()
            if kind.endswith("ConfigurationReady") and c.get("status") == "False"
        ]
        return Probe("failed", "; ".join([*causes, reason]) or "the predictor is not ready")
    if condition.get("status") != "True":
        return Probe("starting", reason)
    created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    if created and ready != created:
        return Probe("starting", f"Knative revision {created} is not ready yet")
    tag = "latest" if h.latest != h.stable else ""
    return Probe("up", endpoint=_url(status, tag) if tag else str(status.get("url") or ""))


def observed_split(isvc: Mapping[str, Any] | None) -> dict[int, int]:
    """The traffic split KServe reports (`status.components.predictor.traffic`) as
    {Plinth revision number: percent}: the target marked latestRevision (or tagged "latest")
    is the latest spec's revision, the others the stable one. Empty before any status."""
    if not isvc:
        return {}
    h = held(isvc)
    split: dict[int, int] = {}
    for target in _predictor_status(isvc.get("status") or {}).get("traffic") or []:
        percent = _int(target.get("percent")) or 0
        is_latest = bool(target.get("latestRevision")) or target.get("tag") == "latest"
        number = h.latest if is_latest else h.stable
        if number is None or percent <= 0:
            continue
        split[number] = split.get(number, 0) + percent
    return split


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `patch` onto `target` (a new object; null removes)."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Held",
    "ManifestError",
    "build_inference_service",
    "build_predictor",
    "check_inference_service",
    "check_predictor",
    "held",
    "merge_patch",
    "observed_split",
    "probe_revision",
    "revision_annotations",
    "service_labels",
]
