"""The batch/v1 Job Plinth creates for one launch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.environments.runtime import image_for, pod_defaults
from apps.launches.runenv import job_argv, job_env

if TYPE_CHECKING:
    from apps.environments.models import Environment
    from apps.launches.models import Launch

LABEL_LAUNCH = "plinth.dev/launch"
LABEL_PROJECT = "plinth.dev/project"
LABEL_TEAM = "plinth.dev/team"
LABEL_MANAGED = "plinth.dev/managed"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
MANAGED_SELECTOR = f"{LABEL_MANAGED}=true"
# Set by the Job controller on its pods ("job-name" on every version, the prefixed one since 1.27).
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
CONTAINER_NAME = "main"
# Variables an environment's pod defaults may not set: Plinth's own (the run, the launch, the
# tracking server) always win, so an environment cannot point a job at another MLflow.
RESERVED_ENV_PREFIXES = ("MLFLOW_", "PLINTH_")
RESERVED_ENV_NAMES = frozenset({"JOB_COMPLETION_INDEX"})


def job_labels(launch: Launch) -> dict[str, str]:
    project = launch.project
    return {
        LABEL_LAUNCH: str(launch.pk),
        LABEL_PROJECT: project.slug,
        LABEL_TEAM: project.team.slug,
        LABEL_MANAGED: "true",
    }


def container_resources(resources: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Requests equal limits for CPU and memory (the job gets what the quota charged);
    GPUs are whole devices, set in limits (and requests, which must match for extended
    resources)."""
    amounts: dict[str, str] = {}
    for key in ("cpu", "memory"):
        value = resources.get(key)
        if value not in (None, ""):
            amounts[key] = str(value)
    gpus = int(resources.get("gpus") or 0)
    if gpus > 0:
        amounts[GPU_RESOURCE] = str(gpus)
    if not amounts:
        return {}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def apply_environment(
    pod_spec: dict[str, Any], container: dict[str, Any], environment: Environment | None, fallback_image: str
) -> None:
    """Put `environment` into a pod spec and its container, in place: the container's image
    is the environment's (`runtime.image_for`, else `fallback_image`, the template's); its
    pod defaults are merged — the node selector under the one already set (the GPU product's
    wins), its tolerations added after those already there (no duplicates), its variables
    added to the container's `env` except those the container already sets and Plinth's
    reserved names (MLFLOW_*, PLINTH_*, JOB_COMPLETION_INDEX). No environment (launches older
    than environments): the template's image and nothing else."""
    defaults = pod_defaults(environment)
    container["image"] = image_for(environment, fallback_image)
    env = list(container.get("env") or [])
    taken = {item["name"] for item in env}
    for name, value in defaults["env"].items():
        if name in taken or name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES):
            continue
        env.append({"name": name, "value": value})
        taken.add(name)
    if env:
        container["env"] = env
    node_selector = {**defaults["node_selector"], **(pod_spec.get("nodeSelector") or {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = list(pod_spec.get("tolerations") or [])
    for toleration in defaults["tolerations"]:
        if toleration not in tolerations:
            tolerations.append(toleration)
    if tolerations:
        pod_spec["tolerations"] = tolerations


def build_job_manifest(launch: Launch) -> dict[str, Any]:
    """The Job for `launch`, named `launch.job_name` in the project's namespace.

    The command is an argument list (never a shell string): the first item becomes the
    container's `command`, the rest its `args`, so a parameter such as `; rm -rf /` reaches
    the program as one literal argument.

    The environment is the job's own (`runenv.job_env`: MLflow run variables without
    credentials, the launch's identity, PLINTH_PARAM_*) plus, through `envFrom`, only the
    project namespace's MLflow Secret (PLINTH_KUBE_MLFLOW_SECRET): nothing from the
    portal's environment or its Secret, no volumes, no service account token, no service
    links. The launch's environment gives the image and pod defaults (`apply_environment`)."""
    project = launch.project
    template = launch.template
    labels = job_labels(launch)
    argv = job_argv(launch)

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": template.image,
        "env": [{"name": name, "value": value} for name, value in job_env(launch).items()],
        # A failing job's reason can then quote its last output even after the pod is gone.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if template.command:
        container["command"] = argv[:1]
        container["args"] = argv[1:]
    elif argv:
        container["args"] = argv  # no command: the image's entrypoint gets the parameters
    if settings.PLINTH_KUBE_MLFLOW_SECRET:
        # Credentials for MLflow live in the namespace, never in the manifest; optional so a
        # namespace without them still runs jobs that do not need them.
        container["envFrom"] = [{"secretRef": {"name": settings.PLINTH_KUBE_MLFLOW_SECRET, "optional": True}}]
    resources = container_resources(launch.resources or {})
    if resources:
        container["resources"] = resources

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        # Training code has no business with the Kubernetes API.
        "automountServiceAccountToken": False,
        # No *_SERVICE_HOST/_PORT variables for every Service in the namespace.
        "enableServiceLinks": False,
    }
    gpus = int((launch.resources or {}).get("gpus") or 0)
    gpu_product = str((launch.resources or {}).get("gpu_product") or "")
    if gpus > 0:
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        if gpu_product:
            pod_spec["nodeSelector"] = {GPU_PRODUCT_LABEL: gpu_product}
    apply_environment(pod_spec, container, launch.environment, template.image)

    job_metadata: dict[str, Any] = {"name": launch.job_name, "namespace": project.namespace, "labels": dict(labels)}
    spec: dict[str, Any] = {
        "backoffLimit": settings.PLINTH_KUBE_BACKOFF_LIMIT,
        "completions": 1,
        "parallelism": 1,
        "ttlSecondsAfterFinished": settings.PLINTH_KUBE_JOB_TTL,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if launch.max_runtime_seconds:
        spec["activeDeadlineSeconds"] = launch.max_runtime_seconds
    if project.kueue_queue:
        # Kueue admits the job by unsuspending it once the queue has quota for it.
        job_metadata["labels"][LABEL_KUEUE_QUEUE] = project.kueue_queue
        spec["suspend"] = True

    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_metadata, "spec": spec}
