"""From what the cluster shows of a Job (its status, its pods, its events) to an Observation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from apps.compute.base import Observation
from apps.compute.k8s.manifests import CONTAINER_NAME, LABEL_KUEUE_QUEUE

LOG_LINES_IN_REASON = 20
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
QUOTA_MARK = "exceeded quota"
WAITING_TO_BE_SCHEDULED = "waiting to be scheduled"

Obj = dict[str, Any]


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _condition(obj: Obj, kind: str) -> Obj | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _created(obj: Obj) -> str:
    # RFC 3339 timestamps in UTC sort as strings; the name breaks ties deterministically.
    meta = obj.get("metadata", {})
    return f"{meta.get('creationTimestamp') or ''}|{meta.get('name') or ''}"


def newest(pods: Iterable[Obj]) -> Obj | None:
    return max(pods, key=_created, default=None)


def container_status(pod: Obj) -> Obj:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return dict(statuses[0]) if statuses else {}


def terminated_state(pod: Obj) -> Obj:
    status = container_status(pod)
    return dict(status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated") or {})


def quota_message(text: str) -> str:
    """An admission error trimmed to its quota part: "exceeded quota: gpu, requested: ..."."""
    index = text.find(QUOTA_MARK)
    return text[index:] if index >= 0 else text


def quota_event(job_name: str, events: Iterable[Obj]) -> str:
    """The newest "exceeded quota" complaint about `job_name` among namespace events."""
    found = [
        event
        for event in events
        if event.get("involvedObject", {}).get("kind") == "Job"
        and event.get("involvedObject", {}).get("name") == job_name
        and QUOTA_MARK in (event.get("message") or "")
    ]
    if not found:
        return ""

    def when(event: Obj) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or _created(event))

    return quota_message(str(max(found, key=when)["message"]))


def _failed(job: Obj, condition: Obj, pods: list[Obj], read_log: Callable[[str], str]) -> Observation:
    reason = condition.get("reason") or ""
    finished = parse_time(condition.get("lastTransitionTime"))
    started = parse_time(job.get("status", {}).get("startTime"))
    if reason == "DeadlineExceeded":
        limit = job.get("spec", {}).get("activeDeadlineSeconds")
        return Observation(
            "failed", f"exceeded the maximum run time of {limit} s", started_at=started, finished_at=finished
        )
    failed_pods = [pod for pod in pods if terminated_state(pod)]
    pod = newest(failed_pods)
    if pod is None:
        detail = f"{reason}: {condition.get('message')}" if condition.get("message") else reason or "unknown reason"
        return Observation("failed", f"failed: {detail}", started_at=started, finished_at=finished)
    terminated = terminated_state(pod)
    exit_code = terminated.get("exitCode")
    exit_code = int(exit_code) if exit_code is not None else None
    if terminated.get("reason") == "OOMKilled":
        return Observation(
            "failed", "out of memory (OOMKilled)", exit_code=exit_code, started_at=started, finished_at=finished
        )
    # The container's own words: its log, else the termination message the kubelet kept
    # (FallbackToLogsOnError puts the log's end there when the pod is already gone).
    tail = read_log(pod["metadata"]["name"]) or terminated.get("message") or ""
    tail = "\n".join(tail.rstrip("\n").splitlines()[-LOG_LINES_IN_REASON:])
    text = f"exit code {exit_code}" if exit_code is not None else f"failed: {reason or 'unknown reason'}"
    return Observation(
        "failed", f"{text}\n{tail}" if tail else text, exit_code=exit_code, started_at=started, finished_at=finished
    )


def _pending_pod(pod: Obj) -> str:
    status = container_status(pod)
    waiting = status.get("state", {}).get("waiting") or {}
    waiting_reason = waiting.get("reason") or ""
    if waiting_reason in IMAGE_PULL_REASONS:
        return f"image pull failure: {waiting.get('message') or waiting_reason}"
    scheduled = None
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled":
            scheduled = condition
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return f"unschedulable: {scheduled.get('message') or 'no node fits'}"
    if waiting_reason and waiting_reason != "ContainerCreating":
        # CreateContainerConfigError (a missing secret or config map) and the like.
        message = waiting.get("message")
        return f"cannot start the container: {waiting_reason}" + (f": {message}" if message else "")
    if (scheduled and scheduled.get("status") == "True") or pod.get("spec", {}).get("nodeName"):
        return "starting (ContainerCreating)"
    return WAITING_TO_BE_SCHEDULED


def observe_job(
    job: Obj | None,
    pods: list[Obj],
    *,
    events: Iterable[Obj] = (),
    read_log: Callable[[str], str] = lambda pod: "",
) -> Observation:
    """What `job` (None: not on the cluster) and its `pods` say about a launch.

    `read_log(pod name)` is called only for a job that failed with a non-zero exit, to quote
    its last lines; `events` are consulted only for a job that has no pods (quota)."""
    if job is None:
        return Observation("missing", "no such job on the cluster")
    status = job.get("status", {})
    started = parse_time(status.get("startTime"))

    complete = _condition(job, "Complete")
    if complete is not None:
        finished = parse_time(status.get("completionTime")) or parse_time(complete.get("lastTransitionTime"))
        terminated = terminated_state(newest(pods) or {})
        exit_code = int(terminated["exitCode"]) if "exitCode" in terminated else 0
        return Observation("succeeded", "", exit_code=exit_code, started_at=started, finished_at=finished)
    failed = _condition(job, "Failed")
    if failed is not None:
        return _failed(job, failed, pods, read_log)

    if job.get("metadata", {}).get("deletionTimestamp"):
        return Observation("cancelled", "the job was deleted on the cluster", started_at=started)

    for condition in status.get("conditions") or []:
        if QUOTA_MARK in (condition.get("message") or ""):
            return Observation("pending", f"waiting for quota: {quota_message(condition['message'])}")

    if job.get("spec", {}).get("suspend"):
        queue = job.get("metadata", {}).get("labels", {}).get(LABEL_KUEUE_QUEUE)
        if queue:
            return Observation("pending", f"not admitted by the queue {queue} yet")
        return Observation("pending", "suspended")

    pod = newest(pods)
    if pod is not None:
        phase = pod.get("status", {}).get("phase")
        if any(p.get("status", {}).get("phase") == "Running" for p in pods):
            return Observation("running", "", started_at=started or parse_time(pod.get("status", {}).get("startTime")))
        if phase in ("Succeeded", "Failed"):
            # The pod ended; the Job controller has not written its verdict yet.
            return Observation("running", "finishing", started_at=started)
        return Observation("pending", _pending_pod(pod))

    quota = quota_event(job.get("metadata", {}).get("name", ""), events)
    if quota:
        return Observation("pending", f"waiting for quota: {quota}")
    return Observation("pending", WAITING_TO_BE_SCHEDULED)
