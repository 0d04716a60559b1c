"""The `kubernetes` backend: one batch/v1 Job per launch in the project's namespace, or one
Indexed Job per grid/random sweep (apps.compute.k8s.indexed) whose index i is the sweep's
trial i: a launch whose sweep has a `workload` is observed, logged and cancelled as that index."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db.models import prefetch_related_objects

from apps.compute.base import BackendRejected, BackendUnavailable, GpuDevice, Observation
from apps.compute.k8s import indexed
from apps.compute.k8s.gateway import KubeApi, KubeGateway
from apps.compute.k8s.manifests import (
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    JOB_NAME_LABELS,
    LABEL_LAUNCH,
    LABEL_MANAGED,
    MANAGED_SELECTOR,
    build_job_manifest,
)
from apps.compute.k8s.status import LOG_LINES_IN_REASON, WAITING_TO_BE_SCHEDULED, newest, observe_job

if TYPE_CHECKING:
    from apps.launches.models import Launch, Sweep

logger = logging.getLogger(__name__)


def workload_of(launch: Launch) -> str:
    """The Indexed Job that runs `launch` as its index `launch.trial` ("" when it has a Job
    of its own): recorded in its resources (`workload`) when the sweep created it."""
    if launch.sweep_id is None or launch.trial is None:
        return ""
    return str((launch.resources or {}).get(indexed.WORKLOAD_KEY) or "")


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


class KubernetesBackend:
    """Launches as Jobs on a cluster, observed in bulk.

    Why the shape: the reconciler polls every few seconds for every live launch, so poll
    costs one job list and one pod list per namespace, whatever the number of launches
    (plus one event list, only while some job has no pod, to tell a quota wait apart).
    Everything goes through a KubeApi (the rate-limited gateway, or a fake in tests)."""

    name = "kubernetes"

    def __init__(self, gateway: KubeApi | None = None) -> None:
        self.gateway: KubeApi = gateway if gateway is not None else KubeGateway()

    def submit(self, launch: Launch) -> None:
        if workload_of(launch):
            # One trial of a sweep that runs as one Indexed Job: (re)submit that Job.
            from apps.launches.models import Launch as LaunchModel

            sweep = launch.sweep
            assert sweep is not None
            trials = list(
                LaunchModel.objects.filter(sweep=sweep, resources__has_key=indexed.WORKLOAD_KEY).select_related(
                    "project__team", "template"
                )
            )
            self.submit_workload(sweep, sorted(trials, key=lambda t: t.trial or 0))
            return
        # False (already exists) is success: a worker that crashed after the create, or a
        # resubmit by the reconciler, finds the job it made instead of a duplicate.
        self.gateway.create_job(launch.project.namespace, build_job_manifest(launch))

    def submit_workload(self, sweep: Sweep, trials: Sequence[Launch]) -> None:
        """Submit every trial of `sweep` as one Indexed Job (its ConfigMap, then the Job: two
        requests). `trials` are the sweep's launches, one per planned index. Idempotent."""
        indexed.submit_workload(self.gateway, sweep, trials)

    def delete_workload(self, sweep: Sweep) -> None:
        """Cancel the whole sweep on the cluster: delete its Job and ConfigMap. Idempotent."""
        indexed.delete_workload(self.gateway, sweep.project.namespace, sweep.workload)

    def release_workload(self, sweep: Sweep) -> None:
        """The sweep ended: delete its ConfigMap (the Job stays until its TTL). Idempotent."""
        indexed.release_workload(self.gateway, sweep.project.namespace, sweep.workload)

    def poll(self, launches: Sequence[Launch]) -> dict[int, Observation]:
        launches = list(launches)
        prefetch_related_objects(launches, "project")
        by_namespace: dict[str, list[Launch]] = defaultdict(list)
        for launch in launches:
            by_namespace[launch.project.namespace].append(launch)
        seen: dict[int, Observation] = {}
        for namespace, group in by_namespace.items():
            seen.update(self._poll_namespace(namespace, group))
        return seen

    def _poll_namespace(self, namespace: str, launches: list[Launch]) -> dict[int, Observation]:
        jobs = {
            job["metadata"]["name"]: job
            for job in self.gateway.list_jobs(namespace, MANAGED_SELECTOR)
            if job.get("metadata", {}).get("labels", {}).get(LABEL_MANAGED) == "true"
        }
        pods_by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in self.gateway.list_pods(namespace, MANAGED_SELECTOR):
            labels = pod.get("metadata", {}).get("labels") or {}
            if labels.get(LABEL_MANAGED) != "true":
                continue
            job_name = next((labels[key] for key in JOB_NAME_LABELS if labels.get(key)), None)
            if job_name is None and labels.get(LABEL_LAUNCH):
                job_name = f"plinth-{labels[LABEL_LAUNCH]}"
            if job_name:
                pods_by_job[job_name].append(pod)

        def reader(pod_name: str) -> str:
            try:
                return self.gateway.read_pod_log(namespace, pod_name, LOG_LINES_IN_REASON)
            except (BackendUnavailable, BackendRejected):
                return ""  # the reason still says what failed; the quote is a bonus

        seen: dict[int, Observation] = {}
        without_pods: list[Launch] = []
        views: dict[str, indexed.WorkloadView] = {}
        for launch in launches:
            workload = workload_of(launch)
            if workload:
                if workload not in views:
                    views[workload] = indexed.WorkloadView.read(jobs.get(workload), pods_by_job.get(workload, []))
                assert launch.trial is not None
                observation = views[workload].observe(launch.trial, read_log=reader)
                seen[launch.pk] = observation
                if observation.reason == WAITING_TO_BE_SCHEDULED:
                    without_pods.append(launch)
                continue
            job = jobs.get(launch.job_name)
            pods = pods_by_job.get(launch.job_name, [])
            observation = observe_job(job, pods, read_log=reader)
            seen[launch.pk] = observation
            if job is not None and not pods and observation.reason == WAITING_TO_BE_SCHEDULED:
                without_pods.append(launch)
        if without_pods:
            # A job whose pods the quota forbids has no pods and says so only in events.
            try:
                events = self.gateway.list_events(namespace, "involvedObject.kind=Job")
            except (BackendUnavailable, BackendRejected) as exc:
                logger.info("no events for %s: %s", namespace, exc)
                events = []
            for launch in without_pods:
                workload = workload_of(launch)
                if workload:
                    assert launch.trial is not None
                    seen[launch.pk] = views[workload].observe(launch.trial, events=events)
                else:
                    seen[launch.pk] = observe_job(jobs[launch.job_name], [], events=events)
        return seen

    def logs(self, launch: Launch, tail: int = 200) -> str:
        namespace = launch.project.namespace
        workload = workload_of(launch)
        if workload:
            assert launch.trial is not None
            pod = newest(indexed.index_pods(self.gateway, namespace, workload, launch.trial))
            return "" if pod is None else self.gateway.read_pod_log(namespace, pod["metadata"]["name"], tail)
        pods = [
            pod
            for pod in self.gateway.list_pods(namespace, f"job-name={launch.job_name}")
            if any((pod.get("metadata", {}).get("labels") or {}).get(key) == launch.job_name for key in JOB_NAME_LABELS)
        ]
        pod = newest(pods)
        if pod is None:
            return ""
        return self.gateway.read_pod_log(namespace, pod["metadata"]["name"], tail)

    def cancel(self, launch: Launch) -> None:
        workload = workload_of(launch)
        if workload:
            sweep = launch.sweep
            assert sweep is not None and launch.trial is not None
            if sweep.status != "running":
                # The whole sweep was cancelled (or failed): one deletion of its Job stops every trial.
                self.delete_workload(sweep)
            else:
                indexed.cancel_index(self.gateway, launch.project.namespace, workload, launch.trial)
            return
        self.gateway.delete_job(launch.project.namespace, launch.job_name)

    def inventory(self) -> list[GpuDevice]:
        devices: list[GpuDevice] = []
        for node in self.gateway.list_nodes():
            count = _int((node.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE))
            labels = node.get("metadata", {}).get("labels") or {}
            name = node.get("metadata", {}).get("name", "")
            schedulable = "false" if node.get("spec", {}).get("unschedulable") else "true"
            for index in range(count):
                devices.append(
                    GpuDevice(
                        node=name,
                        index=index,
                        model=labels.get(GPU_PRODUCT_LABEL, ""),
                        memory_total_mib=_int(labels.get(GPU_MEMORY_LABEL)),
                        extra={"schedulable": schedulable},
                    )
                )
        return devices
