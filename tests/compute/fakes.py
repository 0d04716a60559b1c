"""Test doubles for the Kubernetes backend, and helpers that build launches with the ORM.

FakeKubeGateway is a FAKE (a working, in-memory API server at the level of KubeGateway's
methods), not a mock: it keeps jobs, pods, events and nodes per namespace, answers the way
the gateway does for the API server's answers (False on a duplicate create = 409, False on
deleting what is gone = 404, "" for the log of a pod that is gone or not started), validates
every Job it is given against the real OpenAPI schema, and counts calls per method.
JobController moves a job through its life the way the Job controller, the scheduler, the
kubelet, the garbage collector and Kueue would. test_kubernetes_emulator.py runs the same
contract against both this fake and the real client talking to kmock, so the two cannot
drift apart unnoticed."""

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
from apps.launches.models import Launch, Template
from apps.projects.models import Project

Obj = dict[str, Any]

GPU_MODEL = "NVIDIA-A100-SXM4-80GB"
RESOURCES = {"cpu": "1", "memory": "1Gi", "gpus": 1, "gpu_model": GPU_MODEL}
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
        self.events: dict[str, list[Obj]] = defaultdict(list)
        self.nodes: list[Obj] = []
        self.logs: dict[tuple[str, str], str] = {}
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

    def read_pod_log(self, namespace: str, pod: str, tail_lines: int) -> str:
        self._enter("read_pod_log", namespace)
        found = self.pods[namespace].get(pod)
        if found is None or found["status"].get("phase") == "Pending":
            return ""  # 404 / 400 "container is waiting to start"
        text = self.logs.get((namespace, pod), "")
        lines = text.splitlines(keepends=True)
        return "".join(lines[-tail_lines:]) if tail_lines else text

    def list_nodes(self) -> list[dict[str, Any]]:
        self._enter("list_nodes")
        return copy.deepcopy(self.nodes)

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
