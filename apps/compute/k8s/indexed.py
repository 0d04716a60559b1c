"""One Indexed Job for a whole grid or random sweep: its manifests, its submission, what the
cluster shows of each index, and cancelling one index or the whole workload.

The Kubernetes semantics relied on (batch/v1 Job API, Kubernetes 1.31 and later; see
https://kubernetes.io/docs/concepts/workloads/controllers/job/ and the Job API reference
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/):

- `completionMode: Indexed` with `completions: N`: the Job controller makes one pod per index
  0..N-1, at most `parallelism` at a time; each pod carries its index in the annotation
  (and, since 1.28, the label) `batch.kubernetes.io/job-completion-index` and in the
  `JOB_COMPLETION_INDEX` environment variable of its containers.
- `backoffLimitPerIndex: 0` (GA in 1.33, beta and on by default since 1.29): a failed pod fails
  its index for good, the other indexes go on; `maxFailedIndexes: N` so the Job never stops
  early because of failed trials. The Job's status lists finished indexes as interval strings:
  `completedIndexes` and `failedIndexes`, e.g. "1,3-5".
- `podFailurePolicy` with `{action: FailIndex, onPodConditions: [{type: DisruptionTarget}]}`:
  a pod the cluster disrupts (eviction, preemption, pod garbage collection) fails its index
  at once; `podReplacementPolicy: Failed` (required with a pod failure policy) makes no
  replacement pod before the old one has terminated.
- A pod deleted through the API is marked failed by the Job controller once it terminates,
  which, with no retries per index, fails its index: deleting an index's pod cancels that
  trial only. Deleting the Job (propagation Background) removes every pod.

Each trial's identity and parameters reach its pod through a ConfigMap with one small shell
script per index (`trial-<i>.sh`: `export` of the trial's own variables — its MLflow run id,
launch id and PLINTH_PARAM_* — then `exec` of its argument list), every value quoted with
`shlex.quote`, so a parameter such as `; rm -rf /` stays one literal argument. The pod's
command is a fixed `/bin/sh -c` that runs the script of `$JOB_COMPLETION_INDEX`: the image
needs a POSIX shell at /bin/sh. The ConfigMap is created before the Job (pods never wait for
it) and deleted with the workload; it is kept small (a ConfigMap holds at most 1 MiB)."""

from __future__ import annotations

import itertools
import logging
import shlex
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.compute.base import BackendRejected, Observation
from apps.compute.k8s.gateway import KubeApi
from apps.compute.k8s.manifests import (
    CONTAINER_NAME,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    JOB_NAME_LABELS,
    LABEL_KUEUE_QUEUE,
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_TEAM,
    apply_environment,
    container_resources,
)
from apps.compute.k8s.status import (
    LOG_LINES_IN_REASON,
    QUOTA_MARK,
    WAITING_TO_BE_SCHEDULED,
    _condition,
    _pending_pod,
    newest,
    parse_time,
    quota_event,
    quota_message,
    terminated_state,
)
from apps.launches.runenv import job_argv, job_env, job_tracking_uri

if TYPE_CHECKING:
    from apps.launches.models import Launch, Sweep

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

LABEL_SWEEP = "plinth.dev/sweep"
# The key of a trial launch's `resources` that names the Indexed Job running it.
WORKLOAD_KEY = "workload"
# Set by the Job controller on every pod of an Indexed Job (annotation always, label since 1.28).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
TRIALS_DIR = "/etc/plinth/trials"
TRIALS_VOLUME = "plinth-trials"
# The exit status of the script of a trial cancelled before its pod started (see `cancel_index`).
CANCELLED_EXIT_CODE = 3
CANCELLED_MARK = "plinth: this trial was cancelled before it started"
CONFIG_MAP_LIMIT = 1024 * 1024  # bytes: the API server refuses a larger ConfigMap
WAITING_FOR_SLOT = "waiting for a free slot of the sweep"
# The variables every trial shares (in the pod template); the rest are per index (in its script).
SHARED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "PLINTH_PROJECT")
# `${…:?}`: a pod without its index fails loudly instead of running some other trial.
RUN_TRIAL = f'exec /bin/sh "{TRIALS_DIR}/trial-${{JOB_COMPLETION_INDEX:?}}.sh"'


def workload_name(sweep: Sweep) -> str:
    """The Job's (and its ConfigMap's) deterministic name: resubmitting after a crash finds
    it. It is the name the sweep recorded (`Sweep.workload`) when it created its trials."""
    return sweep.workload or f"plinth-sweep-{sweep.pk}"


def script_key(index: int) -> str:
    return f"trial-{index}.sh"


def workload_labels(sweep: Sweep) -> dict[str, str]:
    """The labels of the Job, its pods and its ConfigMap: those of every Plinth Job (project,
    team, managed) plus the sweep's id (no launch label: the Job runs many launches)."""
    project = sweep.project
    return {
        LABEL_SWEEP: str(sweep.pk),
        LABEL_PROJECT: project.slug,
        LABEL_TEAM: project.team.slug,
        LABEL_MANAGED: "true",
    }


def trial_script(launch: Launch) -> str:
    """The script index `launch.trial` runs: the trial's own variables, then its program.

    Every word is `shlex.quote`d (safe for any POSIX shell); variable names are MLflow's
    and PLINTH_* names, letters, digits and underscores only (apps.launches.argv.env_name)."""
    own = {name: value for name, value in job_env(launch).items() if name not in SHARED_ENV}
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in own.items())
    argv = " ".join(shlex.quote(arg) for arg in job_argv(launch))
    return f"# trial {launch.trial} of sweep {launch.sweep_id}: launch {launch.pk}\nexport {exports}\nexec {argv}\n"


def cancelled_script(index: int) -> str:
    """What an index cancelled before its pod started runs instead of its trial: it fails
    at once (so the index fails, not completes), saying why."""
    return f"echo {shlex.quote(f'{CANCELLED_MARK} (index {index})')} >&2\nexit {CANCELLED_EXIT_CODE}\n"


def build_trials_config_map(sweep: Sweep, trials: Sequence[Launch]) -> Obj:
    """The ConfigMap with one script per index (`trial-<i>.sh`). A trial that already ended
    (cancelled before submission) gets `cancelled_script`. Raises BackendRejected when the
    scripts exceed the 1 MiB a ConfigMap may hold."""
    data: dict[str, str] = {}
    for launch in trials:
        assert launch.trial is not None
        data[script_key(launch.trial)] = cancelled_script(launch.trial) if launch.is_terminal else trial_script(launch)
    size = sum(len(key) + len(value.encode()) for key, value in data.items())
    if size > CONFIG_MAP_LIMIT:
        raise BackendRejected(
            f"the {len(data)} trials' parameters take {size} bytes, more than the {CONFIG_MAP_LIMIT} "
            "a ConfigMap may hold: run fewer trials per sweep, or shorter parameter values"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": workload_name(sweep),
            "namespace": sweep.project.namespace,
            "labels": workload_labels(sweep),
        },
        "data": data,
    }


def build_indexed_job_manifest(sweep: Sweep, trials: Sequence[Launch]) -> Obj:
    """The Indexed Job that runs every trial of `sweep`: index i is the trial with
    `launch.trial == i` (its parameters in the ConfigMap's `trial-<i>.sh`).

    `completions` is the number of planned trials and `parallelism` the sweep's (at most
    that); each pod gets the template's resources, GPU node selector and tolerations like a
    single launch's Job, the run-time limit as the pod's own `activeDeadlineSeconds` (a
    Job-wide deadline would stop the whole sweep), no service account token and no service
    links, and the project namespace's MLflow Secret through `envFrom`; the trials'
    environment gives the image and pod defaults (`manifests.apply_environment`). With a Kueue queue
    the Job is created suspended and Kueue admits the whole sweep as one workload."""
    project = sweep.project
    template = sweep.template
    completions = len(sweep.planned)
    parallelism = max(1, min(sweep.parallelism, completions))
    labels = workload_labels(sweep)
    resources = dict(sweep.resources or {})

    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": job_tracking_uri()},
        {"name": "MLFLOW_EXPERIMENT_ID", "value": trials[0].mlflow_experiment_id if trials else ""},
        {"name": "PLINTH_PROJECT", "value": project.full_slug},
        {"name": "PLINTH_SWEEP_ID", "value": str(sweep.pk)},
    ]
    container: Obj = {
        "name": CONTAINER_NAME,
        "image": template.image,
        "command": ["/bin/sh", "-c", RUN_TRIAL],
        "env": env,
        "volumeMounts": [{"name": TRIALS_VOLUME, "mountPath": TRIALS_DIR, "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.PLINTH_KUBE_MLFLOW_SECRET:
        container["envFrom"] = [{"secretRef": {"name": settings.PLINTH_KUBE_MLFLOW_SECRET, "optional": True}}]
    amounts = container_resources(resources)
    if amounts:
        container["resources"] = amounts

    pod_spec: Obj = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": TRIALS_VOLUME, "configMap": {"name": workload_name(sweep), "defaultMode": 0o444}}],
        "activeDeadlineSeconds": template.max_runtime_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    gpus = int(resources.get("gpus") or 0)
    gpu_product = str(resources.get("gpu_product") or "")
    if gpus > 0:
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        if gpu_product:
            pod_spec["nodeSelector"] = {GPU_PRODUCT_LABEL: gpu_product}
    # Every trial of a sweep runs in one environment (apps.launches.workloads.create_trials).
    apply_environment(pod_spec, container, trials[0].environment if trials else None, template.image)

    metadata: Obj = {"name": workload_name(sweep), "namespace": project.namespace, "labels": dict(labels)}
    spec: Obj = {
        "completionMode": "Indexed",
        "completions": completions,
        "parallelism": parallelism,
        "backoffLimitPerIndex": 0,
        "maxFailedIndexes": completions,
        "podFailurePolicy": {
            "rules": [{"action": "FailIndex", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
        },
        "podReplacementPolicy": "Failed",
        "ttlSecondsAfterFinished": settings.PLINTH_KUBE_JOB_TTL,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if project.kueue_queue:
        metadata["labels"][LABEL_KUEUE_QUEUE] = project.kueue_queue
        spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def submit_workload(gateway: KubeApi, sweep: Sweep, trials: Sequence[Launch]) -> None:
    """Create the ConfigMap, then the Job: two requests whatever the number of trials.
    Idempotent: either already existing counts as success (a retried submit after a crash).
    Raises BackendUnavailable / BackendRejected as the gateway does."""
    namespace = sweep.project.namespace
    gateway.create_config_map(namespace, build_trials_config_map(sweep, trials))
    gateway.create_job(namespace, build_indexed_job_manifest(sweep, trials))


def delete_workload(gateway: KubeApi, namespace: str, name: str) -> None:
    """Delete the Job (its pods go with it: propagation Background) and its ConfigMap;
    what is already gone is fine."""
    gateway.delete_job(namespace, name)
    gateway.delete_config_map(namespace, name)


def release_workload(gateway: KubeApi, namespace: str, name: str) -> None:
    """After the sweep ended: delete the ConfigMap only; the Job and its ended pods stay
    (their logs are the trials' logs) until `ttlSecondsAfterFinished` removes them."""
    gateway.delete_config_map(namespace, name)


def _is_workload_pod(pod: Obj, name: str) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return any(labels.get(key) == name for key in JOB_NAME_LABELS)


def index_pods(gateway: KubeApi, namespace: str, name: str, index: int) -> list[Obj]:
    """The pods of index `index` of the Job `name` (one list request)."""
    pods = gateway.list_pods(namespace, f"job-name={name}")
    return [pod for pod in pods if _is_workload_pod(pod, name) and pod_index(pod) == index]


def cancel_index(gateway: KubeApi, namespace: str, name: str, index: int) -> None:
    """Cancel one trial: its script becomes `cancelled_script` (a pod the Job controller
    creates for it later fails at once) and its running pod, if any, is deleted (the Job
    controller then fails the index; backoffLimitPerIndex 0 means no retry). The other
    indexes go on. Idempotent; three requests at most. (A program that catches SIGTERM and
    exits 0 ends its pod `Succeeded`: its index then counts as completed, as on any Job.)"""
    gateway.patch_config_map(namespace, name, {script_key(index): cancelled_script(index)})
    for pod in index_pods(gateway, namespace, name, index):
        if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            gateway.delete_pod(namespace, pod["metadata"]["name"])


# --- status -------------------------------------------------------------------------------------
def parse_indexes(text: Any) -> set[int]:
    """The indexes an interval string names: "1,3-5" → {1, 3, 4, 5}; "" or None → set().
    A malformed part is skipped (logged): a status the portal cannot read must not stop the
    reconciler."""
    found: set[int] = set()
    if not text or not isinstance(text, str):
        return found
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            logger.warning("unreadable index interval %r in %r", part, text)
            continue
        found.update(range(first, last + 1))
    return found


def format_indexes(indexes: Iterable[int]) -> str:
    """The interval string the Job controller writes: {1, 3, 4, 5} → "1,3-5"; set() → ""."""
    runs: list[str] = []
    # Consecutive indexes share `index - position`: each group is one interval.
    for _, group in itertools.groupby(enumerate(sorted(set(indexes))), key=lambda pair: pair[1] - pair[0]):
        members = [index for _, index in group]
        runs.append(str(members[0]) if len(members) == 1 else f"{members[0]}-{members[-1]}")
    return ",".join(runs)


def pod_index(pod: Obj) -> int | None:
    """The completion index of a pod of an Indexed Job (label, else annotation); None if absent."""
    meta = pod.get("metadata", {})
    value = (meta.get("labels") or {}).get(COMPLETION_INDEX) or (meta.get("annotations") or {}).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _pod_started(pod: Obj | None) -> Any:
    return parse_time((pod or {}).get("status", {}).get("startTime"))


def _index_failed(pod: Obj | None, deadline: Any, read_log: Callable[[str], str]) -> Observation:
    if pod is None:
        return Observation("failed", "the trial's pod was deleted before it ended")
    started = _pod_started(pod)
    terminated = terminated_state(pod)
    finished = parse_time(terminated.get("finishedAt"))
    if pod.get("status", {}).get("reason") == "DeadlineExceeded":
        return Observation(
            "failed", f"exceeded the maximum run time of {deadline} s", started_at=started, finished_at=finished
        )
    disrupted = _condition(pod, "DisruptionTarget")
    if disrupted is not None:
        detail = disrupted.get("message") or disrupted.get("reason") or "disrupted"
        return Observation("failed", f"stopped by the cluster: {detail}", started_at=started, finished_at=finished)
    exit_code = terminated.get("exitCode")
    exit_code = int(exit_code) if exit_code is not None else None
    if terminated.get("reason") == "OOMKilled":
        return Observation(
            "failed", "out of memory (OOMKilled)", exit_code=exit_code, started_at=started, finished_at=finished
        )
    tail = read_log(pod["metadata"]["name"]) or terminated.get("message") or ""
    if exit_code == CANCELLED_EXIT_CODE and CANCELLED_MARK in tail:
        return Observation("cancelled", "cancelled before it started", exit_code=exit_code, finished_at=finished)
    if not terminated and pod.get("metadata", {}).get("deletionTimestamp"):
        return Observation("failed", "failed: its pod was deleted", started_at=started)
    tail = "\n".join(tail.rstrip("\n").splitlines()[-LOG_LINES_IN_REASON:])
    text = f"exit code {exit_code}" if exit_code is not None else "failed: no exit code recorded"
    return Observation(
        "failed", f"{text}\n{tail}" if tail else text, exit_code=exit_code, started_at=started, finished_at=finished
    )


@dataclass
class WorkloadView:
    """What the cluster shows of one Indexed Job, read once per poll for all its trials."""

    job: Obj | None
    pods_by_index: dict[int, list[Obj]] = field(default_factory=dict)
    completed: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, job: Obj | None, pods: Iterable[Obj]) -> WorkloadView:
        by_index: dict[int, list[Obj]] = defaultdict(list)
        for pod in pods:
            index = pod_index(pod)
            if index is not None:
                by_index[index].append(pod)
        status = (job or {}).get("status", {})
        return cls(
            job=job,
            pods_by_index=dict(by_index),
            completed=parse_indexes(status.get("completedIndexes")),
            failed=parse_indexes(status.get("failedIndexes")),
        )

    @property
    def has_pods(self) -> bool:
        return bool(self.pods_by_index)

    def observe(
        self,
        index: int,
        *,
        events: Iterable[Obj] = (),
        read_log: Callable[[str], str] = lambda pod: "",
    ) -> Observation:
        """The Observation of trial `index`: from `completedIndexes` / `failedIndexes`, else
        from its pod's phase (running, or pending with the reason: unschedulable, image
        pull, quota…), else waiting for one of the sweep's `parallelism` slots. `read_log`
        is called only for a failed index, `events` only while the Job has no pod at all."""
        job = self.job
        if job is None:
            return Observation("missing", "no such job on the cluster")
        pods = self.pods_by_index.get(index, [])
        pod = newest(pods)
        if index in self.completed:
            terminated = terminated_state(pod or {})
            exit_code = int(terminated["exitCode"]) if "exitCode" in terminated else 0
            finished = parse_time(terminated.get("finishedAt")) or parse_time(job["status"].get("completionTime"))
            return Observation("succeeded", "", exit_code=exit_code, started_at=_pod_started(pod), finished_at=finished)
        if index in self.failed:
            return _index_failed(pod, (pod or {}).get("spec", {}).get("activeDeadlineSeconds"), read_log)
        if job.get("metadata", {}).get("deletionTimestamp"):
            return Observation("cancelled", "the sweep's job was deleted on the cluster", started_at=_pod_started(pod))
        ended = _condition(job, "Failed") or _condition(job, "Complete")
        if ended is not None:
            detail = ended.get("message") or ended.get("reason") or "ended"
            return Observation("failed", f"the sweep's job ended before this trial ran: {detail}")
        for condition in job.get("status", {}).get("conditions") or []:
            if QUOTA_MARK in (condition.get("message") or ""):
                return Observation("pending", f"waiting for quota: {quota_message(condition['message'])}")
        if job.get("spec", {}).get("suspend"):
            queue = job.get("metadata", {}).get("labels", {}).get(LABEL_KUEUE_QUEUE)
            return Observation("pending", f"not admitted by the queue {queue} yet" if queue else "suspended")
        if pod is not None:
            phase = pod.get("status", {}).get("phase")
            if any(p.get("status", {}).get("phase") == "Running" for p in pods):
                return Observation("running", "", started_at=_pod_started(pod))
            if phase in ("Succeeded", "Failed"):
                return Observation("running", "finishing", started_at=_pod_started(pod))
            return Observation("pending", _pending_pod(pod))
        if not self.has_pods:
            quota = quota_event(job.get("metadata", {}).get("name", ""), events)
            return Observation("pending", f"waiting for quota: {quota}" if quota else WAITING_TO_BE_SCHEDULED)
        parallelism = job.get("spec", {}).get("parallelism")
        return Observation("pending", f"{WAITING_FOR_SLOT} ({parallelism} trials run at once)")
