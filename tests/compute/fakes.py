"""Test doubles for the Kubernetes backend, and helpers that build launches with the ORM.

FakeKubeGateway is a FAKE (a working, in-memory API server at the level of KubeGateway's
methods), not a mock: it keeps jobs, pods, events and nodes per namespace, answers the way
the gateway does for the API server's answers (False on a duplicate create = 409, False on
deleting what is gone = 404, "" for the log of a pod that is gone or not started), validates
every Job it is given against the real OpenAPI schema, and counts calls per method.
JobController moves a job through its life the way the Job controller, the scheduler, the
kubelet, the garbage collector and Kueue would; for an Indexed Job (a sweep's workload) it
makes one pod per index up to `parallelism`, keeps `completedIndexes` / `failedIndexes`,
fails an index whose pod is deleted or disrupted (backoffLimitPerIndex 0, FailIndex), and
runs each index's script from the sweep's ConfigMap (a cancelled one fails at once).
test_kubernetes_emulator.py and test_indexed_job.py run the same contract against both this
fake and the real client talking to kmock, so the two cannot drift apart unnoticed."""

from __future__ import annotations

import copy
import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate

from apps.accounts.models import User
from apps.compute.base import BackendRejected
from apps.compute.k8s import selector_matches
from apps.compute.k8s.indexed import (
    CANCELLED_EXIT_CODE,
    CANCELLED_MARK,
    COMPLETION_INDEX,
    format_indexes,
    parse_indexes,
    pod_index,
    script_key,
)
from apps.deployments import kserve
from apps.launches.models import Launch, Template
from apps.projects.models import Project

Obj = dict[str, Any]

GPU_MODEL = "NVIDIA-A100-SXM4-80GB"
RESOURCES = {"cpu": "1", "memory": "1Gi", "gpus": 1, "gpu_product": GPU_MODEL}
SCHEMA_VERSION = kubernetes_validate.latest_version()


# --- launches built with the ORM -----------------------------------------------------------
def make_template(project: Project, **overrides: Any) -> Template:
    fields: dict[str, Any] = {
        "team": project.team,
        "slug": "train",
        "name": "Train",
        "image": "ghcr.io/example/train:1.0",
        "command": ["python", "train.py", "--lr={lr}"],
        "parameters": {"lr": {"type": "float", "default": 0.01}, "note": {"type": "str", "default": ""}},
        "backends": ["kubernetes"],
        "max_runtime_seconds": 600,
    }
    fields.update(overrides)
    template, _ = Template.objects.get_or_create(team=fields["team"], slug=fields["slug"], defaults=fields)
    return template


def make_launch(project: Project, user: User, template: Template | None = None, **overrides: Any) -> Launch:
    fields: dict[str, Any] = {
        "project": project,
        "template": template or make_template(project),
        "created_by": user,
        "parameters": {"lr": 0.01},
        "resources": dict(RESOURCES),
        "backend": "kubernetes",
        "mlflow_run_id": "r1",
        "mlflow_experiment_id": "1",
        "max_runtime_seconds": 600,
    }
    fields.update(overrides)
    return Launch.objects.create(**fields)


# --- the fake API server ---------------------------------------------------------------------
class FakeKubeGateway:
    """A stateful, in-memory KubeGateway (see the module docstring for what it promises)."""

    def __init__(self, *, validate: bool = True) -> None:
        self.validate = validate
        self.jobs: dict[str, dict[str, Obj]] = defaultdict(dict)
        self.pods: dict[str, dict[str, Obj]] = defaultdict(dict)
        self.config_maps: dict[str, dict[str, Obj]] = defaultdict(dict)
        self.events: dict[str, list[Obj]] = defaultdict(list)
        self.nodes: list[Obj] = []
        self.logs: dict[tuple[str, ...], str] = {}  # (namespace, pod) or (namespace, pod, container)
        # custom objects: (group, version, plural, namespace) -> name -> object
        self.custom: dict[tuple[str, str, str, str], dict[str, Obj]] = defaultdict(dict)
        self.calls: Counter[str] = Counter()
        self.calls_by_namespace: Counter[tuple[str, str]] = Counter()
        self.deletions: list[tuple[str, str, str]] = []  # (namespace, name, propagation policy)
        self.outage: Exception | None = None  # while set, every call raises it (the server is down)
        self._uids = itertools.count(1)
        self._versions = itertools.count(1)
        self._clock = datetime(2025, 1, 1, tzinfo=UTC)

    # time moves one second per server-side change, so timestamps order like a real cluster's
    def now(self) -> str:
        self._clock += timedelta(seconds=1)
        return self._clock.isoformat().replace("+00:00", "Z")

    def _enter(self, method: str, namespace: str = "") -> None:
        self.calls[method] += 1
        self.calls_by_namespace[(method, namespace)] += 1
        if self.outage is not None:
            raise self.outage

    def _stamp(self, obj: Obj, namespace: str) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta["uid"] = f"uid-{next(self._uids)}"
        meta["creationTimestamp"] = self.now()
        meta["resourceVersion"] = str(next(self._versions))
        obj.setdefault("status", {})
        return obj

    # --- KubeApi ------------------------------------------------------------------------
    def create_job(self, namespace: str, manifest: dict[str, Any]) -> bool:
        self._enter("create_job", namespace)
        job = copy.deepcopy(manifest)
        if self.validate:
            try:
                kubernetes_validate.validate(job, SCHEMA_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:  # the API server answers 422
                raise BackendRejected(f"The Kubernetes API server refused to create job: {exc.message}") from exc
        meta = job.get("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise BackendRejected(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if meta["name"] in self.jobs[namespace]:
            return False
        self.jobs[namespace][meta["name"]] = self._stamp(job, namespace)
        return True

    def list_jobs(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        self._enter("list_jobs", namespace)
        return [copy.deepcopy(job) for job in self.jobs[namespace].values() if _labelled(job, label_selector)]

    def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        self._enter("list_pods", namespace)
        return [copy.deepcopy(pod) for pod in self.pods[namespace].values() if _labelled(pod, label_selector)]

    def list_events(self, namespace: str, field_selector: str = "") -> list[dict[str, Any]]:
        self._enter("list_events", namespace)
        return [copy.deepcopy(event) for event in self.events[namespace] if _fields_match(event, field_selector)]

    def delete_job(self, namespace: str, name: str) -> bool:
        self._enter("delete_job", namespace)
        if self.jobs[namespace].pop(name, None) is None:
            return False
        self.deletions.append((namespace, name, "Background"))
        # Background propagation: the garbage collector removes the pods after the Job is gone.
        for pod_name, pod in list(self.pods[namespace].items()):
            if pod["metadata"]["labels"].get("job-name") == name:
                del self.pods[namespace][pod_name]
        return True

    def read_pod_log(self, namespace: str, pod: str, tail_lines: int, container: str = "") -> str:
        self._enter("read_pod_log", namespace)
        found = self.pods[namespace].get(pod)
        if found is None or found["status"].get("phase") == "Pending":
            return ""  # 404 / 400 "container is waiting to start"
        names = [c.get("name") for c in found.get("spec", {}).get("containers") or []]
        if (container and container not in names) or (not container and len(names) > 1):
            return ""  # 400: "container x is not valid" / "a container name must be specified"
        text = self.logs.get((namespace, pod, container), self.logs.get((namespace, pod), ""))
        lines = text.splitlines(keepends=True)
        return "".join(lines[-tail_lines:]) if tail_lines else text

    def list_nodes(self) -> list[dict[str, Any]]:
        self._enter("list_nodes")
        return copy.deepcopy(self.nodes)

    # --- ConfigMaps and pod deletion (Indexed Jobs: apps.compute.k8s.indexed) ---------------------
    def create_config_map(self, namespace: str, manifest: dict[str, Any]) -> bool:
        self._enter("create_config_map", namespace)
        config_map = copy.deepcopy(manifest)
        if self.validate:
            try:
                kubernetes_validate.validate(config_map, SCHEMA_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise BackendRejected(f"The Kubernetes API server refused to create config map: {exc.message}") from exc
        size = sum(len(key) + len(value.encode()) for key, value in (config_map.get("data") or {}).items())
        if size > 1024 * 1024:  # the API server's limit on a ConfigMap's data
            raise BackendRejected("The Kubernetes API server refused to create config map: too long")
        name = config_map["metadata"]["name"]
        if name in self.config_maps[namespace]:
            return False
        self.config_maps[namespace][name] = self._stamp(config_map, namespace)
        return True

    def patch_config_map(self, namespace: str, name: str, data: dict[str, str]) -> bool:
        self._enter("patch_config_map", namespace)
        found = self.config_maps[namespace].get(name)
        if found is None:
            return False
        found.setdefault("data", {}).update(data)
        found["metadata"]["resourceVersion"] = str(next(self._versions))
        return True

    def delete_config_map(self, namespace: str, name: str) -> bool:
        self._enter("delete_config_map", namespace)
        return self.config_maps[namespace].pop(name, None) is not None

    def delete_pod(self, namespace: str, name: str) -> bool:
        """The kubelet stops the container (SIGTERM), the pod ends `Failed` and is removed;
        the Job controller counts it as a failure of its Job — for an Indexed Job with
        backoffLimitPerIndex 0, of its index, for good (JobController.index_failed)."""
        self._enter("delete_pod", namespace)
        pod = self.pods[namespace].pop(name, None)
        if pod is None:
            return False
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            return True
        job_name = str(pod["metadata"]["labels"].get("job-name") or "")
        index = pod_index(pod)
        if job_name in self.jobs[namespace] and index is not None:
            JobController(self).index_failed(namespace, job_name, index)
        return True

    # --- custom objects (KServe InferenceServices) -------------------------------------------
    def _check_custom(self, group: str, plural: str, obj: Obj) -> None:
        """What the API server does with fieldValidation=Strict against KServe's CRD schema:
        an unknown or mistyped field is a 400 (the gateway's BackendRejected)."""
        if not self.validate or (group, plural) != (kserve.GROUP, kserve.PLURAL):
            return
        try:
            kserve.check_inference_service({k: v for k, v in obj.items() if k != "status"})
        except kserve.ManifestError as exc:
            raise BackendRejected(f"The Kubernetes API server refused the InferenceService: {exc}") from exc

    def create_custom_object(self, group: str, version: str, namespace: str, plural: str, manifest: Obj) -> bool:
        self._enter("create_custom_object", namespace)
        obj = copy.deepcopy(manifest)
        self._check_custom(group, plural, obj)
        if f"{group}/{version}" != obj.get("apiVersion"):
            raise BackendRejected("the API version in the data does not match the expected API version")
        meta = obj.get("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise BackendRejected(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        store = self.custom[(group, version, plural, namespace)]
        if meta["name"] in store:
            return False
        obj["metadata"]["generation"] = 1
        store[meta["name"]] = self._stamp(obj, namespace)
        return True

    def get_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Obj | None:
        self._enter("get_custom_object", namespace)
        found = self.custom[(group, version, plural, namespace)].get(name)
        return copy.deepcopy(found) if found is not None else None

    def patch_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, patch: Obj
    ) -> Obj | None:
        """A JSON merge patch; like the API server, `generation` moves only when the spec changes."""
        self._enter("patch_custom_object", namespace)
        store = self.custom[(group, version, plural, namespace)]
        current = store.get(name)
        if current is None:
            return None
        patched = kserve.merge_patch(current, patch)
        self._check_custom(group, plural, patched)
        if patched.get("spec") != current.get("spec"):
            patched["metadata"]["generation"] = int(current["metadata"].get("generation") or 1) + 1
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        store[name] = patched
        return copy.deepcopy(patched)

    def delete_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> bool:
        self._enter("delete_custom_object", namespace)
        if self.custom[(group, version, plural, namespace)].pop(name, None) is None:
            return False
        self.deletions.append((namespace, name, "Background"))
        return True

    # --- cluster furniture ----------------------------------------------------------------
    def add_node(self, name: str, gpus: int = 0, product: str = "", memory_mib: int = 0, **spec: Any) -> None:
        labels = {"kubernetes.io/hostname": name}
        allocatable = {"cpu": "64", "memory": "512Gi", "pods": "110"}
        if gpus:
            labels.update({"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": str(memory_mib)})
            allocatable["nvidia.com/gpu"] = str(gpus)
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec}
        node["status"] = {"allocatable": allocatable, "capacity": dict(allocatable)}
        self.nodes.append(self._stamp(node, ""))


def _labelled(obj: Obj, selector: str) -> bool:
    return selector_matches(obj.get("metadata", {}).get("labels"), selector)


def _fields_match(obj: Obj, selector: str) -> bool:
    """Equality field selectors such as `involvedObject.kind=Job` (what the API server does)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        path, _, expected = term.partition("=")
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value) != expected:
            return False
    return True


# --- the controllers ---------------------------------------------------------------------------
class JobController:
    """Moves jobs in a FakeKubeGateway through their lives as the cluster would: the Job
    controller makes a pod and writes job conditions, the scheduler binds or refuses it, the
    kubelet pulls, runs and ends the container, Kueue admits a suspended job."""

    def __init__(self, cluster: FakeKubeGateway, node: str = "gpu-node-1") -> None:
        self.cluster = cluster
        self.node = node
        self._suffixes = itertools.count(1)

    def job(self, namespace: str, name: str) -> Obj:
        return self.cluster.jobs[namespace][name]

    def pods(self, namespace: str, name: str) -> list[Obj]:
        return [p for p in self.cluster.pods[namespace].values() if p["metadata"]["labels"].get("job-name") == name]

    def pod(self, namespace: str, name: str) -> Obj:
        pods = self.pods(namespace, name)
        return pods[-1] if pods else self.create_pod(namespace, name)

    def create_pod(self, namespace: str, name: str) -> Obj:
        job = self.job(namespace, name)
        if job["spec"].get("suspend"):
            raise AssertionError("the Job controller makes no pods for a suspended job")
        template = copy.deepcopy(job["spec"]["template"])
        pod_name = f"{name}-{next(self._suffixes):05d}"
        labels = dict(template.get("metadata", {}).get("labels", {}))
        uid = job["metadata"]["uid"]
        labels.update({"job-name": name, "batch.kubernetes.io/job-name": name, "controller-uid": uid})
        labels["batch.kubernetes.io/controller-uid"] = uid
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "conditions": []},
        }
        self.cluster.pods[namespace][pod_name] = self.cluster._stamp(pod, namespace)
        status = job["status"]
        status.setdefault("startTime", self.cluster.now())
        status["active"] = 1
        return pod

    # --- scheduler and kubelet ------------------------------------------------------------------
    def unschedulable(self, namespace: str, name: str, message: str) -> None:
        pod = self.pod(namespace, name)
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ]

    def schedule(self, namespace: str, name: str) -> Obj:
        pod = self.pod(namespace, name)
        pod["spec"]["nodeName"] = self.node
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        pod["status"]["containerStatuses"] = [
            {"name": "main", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]
        return pod

    def image_pull_failure(self, namespace: str, name: str, message: str, reason: str = "ImagePullBackOff") -> None:
        pod = self.schedule(namespace, name)
        pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": reason, "message": message}}

    def run(self, namespace: str, name: str, logs: str = "") -> Obj:
        pod = self.schedule(namespace, name)
        started = self.cluster.now()
        pod["status"].update({"phase": "Running", "startTime": started})
        pod["status"]["containerStatuses"][0].update({"ready": True, "state": {"running": {"startedAt": started}}})
        self.cluster.logs[(namespace, pod["metadata"]["name"])] = logs
        self.job(namespace, name)["status"].update({"active": 1, "ready": 1})
        return pod

    def _end_pod(self, namespace: str, name: str, exit_code: int, reason: str, logs: str) -> Obj:
        pod = self.pod(namespace, name)
        if pod["status"].get("phase") != "Running":
            pod = self.run(namespace, name)
        if logs:
            self.cluster.logs[(namespace, pod["metadata"]["name"])] = logs
        terminated = {"exitCode": exit_code, "reason": reason, "finishedAt": self.cluster.now()}
        if exit_code and logs:
            terminated["message"] = logs[-2048:]  # FallbackToLogsOnError
        pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        pod["status"]["containerStatuses"][0].update({"ready": False, "state": {"terminated": terminated}})
        return pod

    # --- the Job controller's verdicts ------------------------------------------------------------
    def succeed(self, namespace: str, name: str, logs: str = "") -> None:
        self._end_pod(namespace, name, 0, "Completed", logs)
        now = self.cluster.now()
        self.job(namespace, name)["status"].update(
            {
                "active": 0,
                "ready": 0,
                "succeeded": 1,
                "completionTime": now,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            }
        )

    def _job_failed(self, namespace: str, name: str, reason: str, message: str) -> None:
        now = self.cluster.now()
        self.job(namespace, name)["status"].update(
            {
                "active": 0,
                "ready": 0,
                "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": reason, "lastTransitionTime": now},
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now,
                    },
                ],
            }
        )

    def fail(self, namespace: str, name: str, exit_code: int = 1, logs: str = "", reason: str = "Error") -> None:
        self._end_pod(namespace, name, exit_code, reason, logs)
        self._job_failed(namespace, name, "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def oom(self, namespace: str, name: str) -> None:
        self.fail(namespace, name, exit_code=137, reason="OOMKilled")

    def exceed_deadline(self, namespace: str, name: str) -> None:
        # The controller deletes the job's running pods, then marks the job failed.
        for pod in self.pods(namespace, name):
            del self.cluster.pods[namespace][pod["metadata"]["name"]]
        self._job_failed(namespace, name, "DeadlineExceeded", "Job was active longer than specified deadline")

    def forbid_by_quota(self, namespace: str, name: str, quota_text: str) -> None:
        """The ResourceQuota admission refuses the pod: no pod, an event on the Job."""
        job = self.job(namespace, name)
        job["status"].setdefault("startTime", self.cluster.now())
        message = f'Error creating: pods "{name}-xxxxx" is forbidden: {quota_text}'
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{next(self._suffixes)}"},
            "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": name, "namespace": namespace},
            "reason": "FailedCreate",
            "type": "Warning",
            "message": message,
            "lastTimestamp": self.cluster.now(),
        }
        self.cluster.events[namespace].append(self.cluster._stamp(event, namespace))

    def admit(self, namespace: str, name: str) -> None:
        """Kueue admits the workload: it unsuspends the job (and may pin it to a flavor)."""
        self.job(namespace, name)["spec"]["suspend"] = False

    # --- Indexed Jobs (completionMode: Indexed, backoffLimitPerIndex: 0) ---------------------------
    def _indexes(self, namespace: str, name: str) -> tuple[set[int], set[int]]:
        status = self.job(namespace, name)["status"]
        return parse_indexes(status.get("completedIndexes")), parse_indexes(status.get("failedIndexes"))

    def index_pods(self, namespace: str, name: str, index: int) -> list[Obj]:
        return [pod for pod in self.pods(namespace, name) if pod_index(pod) == index]

    def start_indexes(self, namespace: str, name: str) -> list[int]:
        """The Job controller's pass: a pod for each lowest index that has none and is not
        finished, until `parallelism` pods are active. Returns the indexes started."""
        job = self.job(namespace, name)
        if job["spec"].get("suspend"):
            return []
        completed, failed = self._indexes(namespace, name)
        active = {
            pod_index(pod)
            for pod in self.pods(namespace, name)
            if pod["status"].get("phase") not in ("Succeeded", "Failed")
        }
        room = int(job["spec"]["parallelism"]) - len(active)
        started: list[int] = []
        for index in range(int(job["spec"]["completions"])):
            if room <= 0:
                break
            if index in completed or index in failed or index in active:
                continue
            self.create_index_pod(namespace, name, index)
            started.append(index)
            room -= 1
        return started

    def create_index_pod(self, namespace: str, name: str, index: int) -> Obj:
        pod = self.create_pod(namespace, name)
        old_name = pod["metadata"]["name"]
        pod["metadata"]["name"] = f"{name}-{index}-{old_name.rsplit('-', 1)[1]}"
        self.cluster.pods[namespace][pod["metadata"]["name"]] = self.cluster.pods[namespace].pop(old_name)
        pod["metadata"]["labels"][COMPLETION_INDEX] = str(index)
        pod["metadata"].setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
        for container in pod["spec"]["containers"]:
            env = container.setdefault("env", [])
            env.append(
                {
                    "name": "JOB_COMPLETION_INDEX",
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
                }
            )
        self._count_active(namespace, name)
        return pod

    def _count_active(self, namespace: str, name: str) -> None:
        active = [p for p in self.pods(namespace, name) if p["status"].get("phase") not in ("Succeeded", "Failed")]
        self.job(namespace, name)["status"]["active"] = len(active)

    def index_pod(self, namespace: str, name: str, index: int) -> Obj:
        pods = [
            p
            for p in self.index_pods(namespace, name, index)
            if p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
        return pods[-1] if pods else self.create_index_pod(namespace, name, index)

    def script(self, namespace: str, name: str, index: int) -> str:
        config_map = self.cluster.config_maps[namespace].get(name)
        return str(((config_map or {}).get("data") or {}).get(script_key(index), ""))

    def run_index(self, namespace: str, name: str, index: int, logs: str = "") -> Obj:
        """The kubelet starts index `index`'s container, which runs its script: a trial
        cancelled before it started fails at once, the way `cancelled_script` exits."""
        if not self.script(namespace, name, index):
            raise AssertionError("the kubelet cannot mount the trials ConfigMap (FailedMount): no script")
        pod = self.index_pod(namespace, name, index)
        pod["spec"]["nodeName"] = self.node
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        started = self.cluster.now()
        pod["status"].update({"phase": "Running", "startTime": started})
        pod["status"]["containerStatuses"] = [
            {"name": "main", "ready": True, "restartCount": 0, "state": {"running": {"startedAt": started}}}
        ]
        self.cluster.logs[(namespace, pod["metadata"]["name"])] = logs
        self.job(namespace, name)["status"]["ready"] = 1
        if CANCELLED_MARK in self.script(namespace, name, index):
            self.fail_index(
                namespace, name, index, exit_code=CANCELLED_EXIT_CODE, logs=f"{CANCELLED_MARK} (index {index})\n"
            )
        return pod

    def _end_index_pod(self, namespace: str, name: str, index: int, exit_code: int, reason: str, logs: str) -> Obj:
        pods = self.index_pods(namespace, name, index)
        pod = pods[-1] if pods else None
        if pod is None or pod["status"].get("phase") != "Running":
            pod = self.run_index(namespace, name, index)
            if pod["status"]["phase"] != "Running":
                return pod  # its script already ended it
        if logs:
            self.cluster.logs[(namespace, pod["metadata"]["name"])] = logs
        terminated = {"exitCode": exit_code, "reason": reason, "finishedAt": self.cluster.now()}
        if exit_code and logs:
            terminated["message"] = logs[-2048:]
        pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        pod["status"]["containerStatuses"][0].update({"ready": False, "state": {"terminated": terminated}})
        return pod

    def succeed_index(self, namespace: str, name: str, index: int, logs: str = "") -> None:
        self._end_index_pod(namespace, name, index, 0, "Completed", logs)
        completed, _ = self._indexes(namespace, name)
        status = self.job(namespace, name)["status"]
        status["completedIndexes"] = format_indexes(completed | {index})
        status["succeeded"] = int(status.get("succeeded") or 0) + 1
        self._count_active(namespace, name)
        self._settle(namespace, name)

    def fail_index(
        self, namespace: str, name: str, index: int, exit_code: int = 1, logs: str = "", reason: str = "Error"
    ) -> None:
        self._end_index_pod(namespace, name, index, exit_code, reason, logs)
        self.index_failed(namespace, name, index)

    def evict_index(self, namespace: str, name: str, index: int, message: str) -> None:
        """A disruption (preemption, eviction): the pod gets the DisruptionTarget condition and
        ends Failed; the pod failure policy's FailIndex rule fails its index at once."""
        pod = self.index_pod(namespace, name, index)
        pod["status"]["conditions"] = [
            *pod["status"].get("conditions", []),
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": message},
        ]
        pod["status"]["phase"] = "Failed"
        self.index_failed(namespace, name, index)

    def index_failed(self, namespace: str, name: str, index: int) -> None:
        """The Job controller's verdict on a failed pod: backoffLimitPerIndex 0 → the index
        fails for good (listed in failedIndexes); the other indexes go on."""
        completed, failed = self._indexes(namespace, name)
        if index in completed or index in failed:
            return
        status = self.job(namespace, name)["status"]
        status["failedIndexes"] = format_indexes(failed | {index})
        status["failed"] = int(status.get("failed") or 0) + 1
        self._count_active(namespace, name)
        self._settle(namespace, name)

    def _settle(self, namespace: str, name: str) -> None:
        """Every index finished: Complete when none failed, else Failed (FailedIndexes)."""
        job = self.job(namespace, name)
        completed, failed = self._indexes(namespace, name)
        if len(completed | failed) < int(job["spec"]["completions"]):
            return
        now = self.cluster.now()
        job["status"]["active"] = 0
        if not failed:
            job["status"]["completionTime"] = now
            job["status"]["conditions"] = [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "lastTransitionTime": now},
            ]
            return
        job["status"]["conditions"] = [
            {"type": "FailureTarget", "status": "True", "reason": "FailedIndexes", "lastTransitionTime": now},
            {
                "type": "Failed",
                "status": "True",
                "reason": "FailedIndexes",
                "message": "Job has failed indexes",
                "lastTransitionTime": now,
            },
        ]


class KServeController:
    """Plays KServe's controller and Knative Serving (Serverless mode) for the
    InferenceServices in a FakeKubeGateway, writing the status they would: a new Knative
    revision per spec generation, readiness conditions, the rolled-out bookkeeping and the
    traffic table (canaryTrafficPercent between the latest and the last rolled-out revision,
    tagged `latest`/`prev` with their own URLs, as with tag routing on)."""

    def __init__(self, cluster: FakeKubeGateway, domain: str = "example.com") -> None:
        self.cluster = cluster
        self.domain = domain
        self._made: Counter[tuple[str, str]] = Counter()
        self._templates: dict[tuple[str, str], Obj] = {}

    def isvc(self, namespace: str, name: str) -> Obj:
        return self.cluster.custom[(kserve.GROUP, kserve.VERSION, kserve.PLURAL, namespace)][name]

    def _reconcile(self, namespace: str, name: str) -> tuple[Obj, Obj, Obj]:
        isvc = self.isvc(namespace, name)
        status = isvc.setdefault("status", {})
        predictor = status.setdefault("components", {}).setdefault("predictor", {})
        generation = int(isvc["metadata"].get("generation") or 1)
        # Knative makes a revision when the pod template changes; the canary share is only
        # the route's business.
        template = {k: v for k, v in isvc["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
        if (
            int(status.get("observedGeneration") or 0) < generation
            and self._templates.get((namespace, name)) != template
        ):
            self._templates[(namespace, name)] = copy.deepcopy(template)
            self._made[(namespace, name)] += 1
            predictor["latestCreatedRevision"] = f"{name}-predictor-{self._made[(namespace, name)]:05d}"
        status["observedGeneration"] = generation
        status["url"] = f"http://{name}-{namespace}.{self.domain}"
        status["address"] = {"url": f"http://{name}.{namespace}.svc.cluster.local"}
        status["deploymentMode"] = "Serverless"
        predictor["url"] = f"http://{name}-predictor-{namespace}.{self.domain}"
        return isvc, status, predictor

    def _target(self, name: str, namespace: str, revision: str, percent: int, latest: bool, tag: str) -> Obj:
        target: Obj = {"latestRevision": latest, "percent": percent, "revisionName": revision}
        if tag:
            target.update({"tag": tag, "url": f"http://{tag}-{name}-predictor-{namespace}.{self.domain}"})
        return target

    def ready(self, namespace: str, name: str) -> Obj:
        """The latest spec's revision came up; traffic as canaryTrafficPercent says."""
        isvc, status, predictor = self._reconcile(namespace, name)
        latest = predictor["latestCreatedRevision"]
        predictor["latestReadyRevision"] = latest
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        rolled = predictor.get("latestRolledoutRevision")
        if canary is None or rolled is None or rolled == latest:
            if rolled and rolled != latest:
                predictor["previousRolledoutRevision"] = rolled
            predictor["latestRolledoutRevision"] = latest
            predictor["traffic"] = [self._target(name, namespace, latest, 100, True, "")]
        else:
            predictor["traffic"] = [
                self._target(name, namespace, latest, int(canary), True, "latest"),
                self._target(name, namespace, rolled, 100 - int(canary), False, "prev"),
            ]
        now = self.cluster.now()
        status["conditions"] = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in (
                "IngressReady",
                "PredictorConfigurationReady",
                "PredictorReady",
                "PredictorRouteReady",
                "Ready",
            )
        ]
        status["modelStatus"] = {
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "transitionStatus": "UpToDate",
            "copies": {"failedCopies": 0, "totalCopies": 1},
        }
        return isvc

    def fail(self, namespace: str, name: str, message: str) -> Obj:
        """The latest spec's revision cannot come up (Knative: RevisionFailed / RevisionMissing)."""
        isvc, status, predictor = self._reconcile(namespace, name)
        latest = predictor["latestCreatedRevision"]
        now = self.cluster.now()
        failed = {
            "type": "PredictorConfigurationReady",
            "status": "False",
            "reason": "RevisionFailed",
            "message": f'Revision "{latest}" failed with message: {message}.',
            "lastTransitionTime": now,
        }
        missing = {
            "reason": "RevisionMissing",
            "message": f'Configuration "{name}-predictor" does not have any ready Revision.',
            "status": "False",
            "lastTransitionTime": now,
        }
        status["conditions"] = [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": now},
            failed,
            {"type": "PredictorReady", **missing},
            {"type": "Ready", **missing},
        ]
        return isvc

    def model_load_failed(self, namespace: str, name: str, message: str) -> Obj:
        """The server started but the model did not load (KServe's modelStatus)."""
        isvc = self.fail(namespace, name, "Container failed with: model load error")
        isvc["status"]["modelStatus"] = {
            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message},
            "copies": {"failedCopies": 1, "totalCopies": 1},
        }
        return isvc

    def add_predictor_pod(self, namespace: str, name: str, revision: int, logs: str) -> str:
        """A running predictor pod of Plinth revision `revision`, its model container's log."""
        isvc = self.isvc(namespace, name)
        labels = dict(isvc["spec"]["predictor"].get("labels") or {})
        labels.update({kserve.LABEL_ISVC: name, kserve.LABEL_REVISION: str(revision), "component": "predictor"})
        pod_name = f"{name}-predictor-{revision:05d}-deployment-{self._made[(namespace, name)]:05d}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "labels": labels},
            "spec": {"containers": [{"name": kserve.MODEL_CONTAINER}, {"name": "queue-proxy"}]},
            "status": {"phase": "Running"},
        }
        self.cluster.pods[namespace][pod_name] = self.cluster._stamp(pod, namespace)
        self.cluster.logs[(namespace, pod_name, kserve.MODEL_CONTAINER)] = logs
        return pod_name
