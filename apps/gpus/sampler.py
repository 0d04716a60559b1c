"""One sampler pass: ask every configured source, merge what they say per GPU (node, index),
decide who holds each GPU, update the inventory and store one sample per GPU.

Who holds a GPU, best evidence first:
1. the pod dcgm-exporter names on the GPU's series (validated against the cluster's pods
   when Kubernetes is configured: a named pod that holds no GPU is not a holder);
2. otherwise the pods the cluster shows on the node, by their `nvidia.com/gpu` requests: a
   pod holding N GPUs takes the node's N lowest free indexes (the count per node is exact;
   which index a pod got is not published by Kubernetes without the exporter's mapping);
3. local launches: the `CUDA_VISIBLE_DEVICES` the local backend handed out on its host.
A pod is a launch when it carries `plinth.dev/launch` (or, with no cluster to ask, when it
is named like a launch's job pod in that launch's namespace); otherwise it belongs to the
project whose namespace it runs in, or only to its namespace."""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.compute.k8s.manifests import LABEL_LAUNCH
from apps.gpus.config import Sources, configured_sources
from apps.gpus.models import Gpu, SourceStatus, resolution_seconds
from apps.gpus.sources.base import NodeGpus, PodClaim, Reading, SourceError
from apps.gpus.store import floor_time, insert_samples
from apps.launches.models import LIVE, Launch
from apps.projects.models import Project

logger = logging.getLogger(__name__)

JOB_POD = re.compile(r"^plinth-(\d+)-[a-z0-9]+$")


@dataclass
class Holder:
    namespace: str = ""
    pod: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    launch_id: int | None = None
    project_id: int | None = None
    team_id: int | None = None


@dataclass
class GpuState:
    node: str
    index: int
    uuid: str = ""
    product: str = ""
    memory_total_mib: int = 0
    schedulable: bool = True
    sources: set[str] = field(default_factory=set)
    reading: Reading | None = None
    holder: Holder | None = None


@dataclass
class PassResult:
    at: datetime
    gpus: int = 0
    allocated: int = 0
    samples: int = 0
    seconds: float = 0.0
    statuses: dict[str, str] = field(default_factory=dict)


# --- merging -------------------------------------------------------------------------------
def merge(
    nodes: list[NodeGpus],
    claims: list[PodClaim] | None,
    readings: dict[str, list[Reading]],
    local_launches: Sequence[Launch] = (),
) -> dict[tuple[str, int], GpuState]:
    """Per-GPU state from the sources' answers (`claims` None: no cluster to ask)."""
    states: dict[tuple[str, int], GpuState] = {}
    for node in nodes:
        for index in range(node.count):
            states[(node.name, index)] = GpuState(
                node.name, index, product=node.product, memory_total_mib=node.memory_mib, schedulable=node.schedulable
            )
            states[(node.name, index)].sources.add("kubernetes")
    for source, found in readings.items():
        for reading in found:
            state = states.setdefault((reading.node, reading.index), GpuState(reading.node, reading.index))
            state.sources.add(source)
            if state.reading is not None:
                continue  # the first source to measure a GPU wins (Prometheus before NVML)
            state.reading = reading
            state.uuid = state.uuid or reading.uuid
            state.product = state.product or reading.product
            if not state.memory_total_mib and reading.memory_used_mib is not None and reading.memory_free_mib:
                state.memory_total_mib = reading.memory_used_mib + reading.memory_free_mib

    by_pod = {(c.namespace, c.name): c for c in claims or []}
    taken: dict[tuple[str, str], int] = defaultdict(int)
    for state in states.values():
        measured = state.reading
        if measured is None or not measured.pod:
            continue
        if claims is None:
            state.holder = Holder(measured.namespace, measured.pod)
            continue
        claim = by_pod.get((measured.namespace, measured.pod))
        if claim is not None and taken[(claim.namespace, claim.name)] < claim.gpus:
            taken[(claim.namespace, claim.name)] += 1
            state.holder = Holder(claim.namespace, claim.name, claim.labels)
    free_by_node: dict[str, list[GpuState]] = defaultdict(list)
    for state in sorted(states.values(), key=lambda s: (s.node, s.index)):
        if state.holder is None:
            free_by_node[state.node].append(state)
    for claim in claims or []:
        left = claim.gpus - taken[(claim.namespace, claim.name)]
        free = free_by_node.get(claim.node, [])
        while left > 0 and free:
            free.pop(0).holder = Holder(claim.namespace, claim.name, claim.labels)
            left -= 1
    for launch in local_launches:
        for text in (launch.gpu_devices or "").split(","):
            device = states.get((launch.local_host, int(text))) if text.strip().isdigit() else None
            if device is not None and device.holder is None:
                device.holder = Holder(launch_id=launch.pk)
    return states


def resolve_holders(states: dict[tuple[str, int], GpuState]) -> None:
    """Fill launch, project and team of every holder (two queries, whatever the count)."""
    holders = [s.holder for s in states.values() if s.holder is not None]
    wanted: set[int] = set()
    for holder in holders:
        if holder.launch_id is None:
            candidate = holder.labels.get(LABEL_LAUNCH, "")
            if not candidate and not holder.labels:
                match = JOB_POD.match(holder.pod)
                candidate = match.group(1) if match else ""
            holder.launch_id = int(candidate) if candidate.isdigit() else None
        if holder.launch_id is not None:
            wanted.add(holder.launch_id)
    launches = {
        launch.pk: launch
        for launch in Launch.objects.filter(pk__in=wanted)
        .select_related("project")
        .only("pk", "project__id", "project__team_id", "project__namespace")
    }
    namespaces = {h.namespace for h in holders if h.namespace}
    projects = {
        p.namespace: p for p in Project.objects.filter(namespace__in=namespaces).only("pk", "team_id", "namespace")
    }
    for holder in holders:
        launch = launches.get(holder.launch_id) if holder.launch_id is not None else None
        if launch is not None and holder.namespace and launch.project.namespace != holder.namespace:
            launch = None  # a label or name that does not fit the namespace: not that launch
        if launch is not None:
            holder.launch_id, holder.project_id, holder.team_id = launch.pk, launch.project.pk, launch.project.team_id
            holder.namespace = holder.namespace or launch.project.namespace
            continue
        holder.launch_id = None
        project = projects.get(holder.namespace)
        if project is not None:
            holder.project_id, holder.team_id = project.pk, project.team_id


# --- one pass ------------------------------------------------------------------------------
def _record_status(
    name: str, configured: bool, ok: bool, message: str, gpus: int, started: float, now: datetime
) -> None:
    SourceStatus.objects.update_or_create(
        name=name,
        defaults={
            "configured": configured,
            "ok": ok,
            "message": message[:2000],
            "gpus": gpus,
            "duration_ms": int((time.perf_counter() - started) * 1000),
            "checked_at": now,
        },
    )


def collect(sources: Sources, now: datetime) -> tuple[list[NodeGpus], list[PodClaim] | None, dict[str, list[Reading]]]:
    """Ask every source; a failing one is recorded and skipped, never fatal to the pass."""
    nodes: list[NodeGpus] = []
    claims: list[PodClaim] | None = None
    if sources.cluster is not None:
        started = time.perf_counter()
        try:
            nodes = sources.cluster.nodes()
            claims = sources.cluster.claims()
        except SourceError as exc:
            nodes, claims = [], None
            _record_status("kubernetes", True, False, str(exc), 0, started, now)
        else:
            gpus = sum(n.count for n in nodes)
            _record_status(
                "kubernetes", True, True, f"{len(nodes)} GPU nodes, {len(claims)} GPU pods", gpus, started, now
            )
    known = frozenset(n.name for n in nodes)
    readings: dict[str, list[Reading]] = {}
    for source in sources.metrics:
        started = time.perf_counter()
        try:
            found = source.readings(known)
        except SourceError as exc:
            _record_status(source.name, True, False, str(exc), 0, started, now)
            continue
        readings[source.name] = found
        message = f"{len(found)} GPUs" if found else "no GPUs reported"
        if not found and source.name == "nvml":
            message = "no GPUs on this host (no NVIDIA driver, or none installed)"
        _record_status(source.name, True, True, message, len(found), started, now)
    return nodes, claims, readings


def local_launches() -> list[Launch]:
    """Live local launches holding GPUs (the local backend wrote which, and on which host)."""
    return list(
        Launch.objects.filter(backend="local", status__in=LIVE, local_pid__isnull=False)
        .exclude(gpu_devices="")
        .only("pk", "gpu_devices", "local_host")
    )


GPU_UPDATE_FIELDS = (
    "uuid",
    "product",
    "memory_total_mib",
    "sources",
    "schedulable",
    "present",
    "last_seen_at",
    "allocated",
    "launch_id",
    "project_id",
    "team_id",
    "namespace",
    "pod",
    "utilization",
    "memory_used_mib",
    "power_w",
    "engine_active",
    "sampled_at",
)


def _gpu_values(state: GpuState, at: datetime) -> dict[str, Any]:
    reading, holder = state.reading, state.holder
    return {
        "uuid": state.uuid,
        "product": state.product,
        "memory_total_mib": state.memory_total_mib,
        "sources": ",".join(sorted(state.sources)),
        "schedulable": state.schedulable,
        "present": True,
        "last_seen_at": at,
        "allocated": holder is not None,
        "launch_id": holder.launch_id if holder else None,
        "project_id": holder.project_id if holder else None,
        "team_id": holder.team_id if holder else None,
        "namespace": holder.namespace if holder else "",
        "pod": holder.pod if holder else "",
        "utilization": reading.utilization if reading else None,
        "memory_used_mib": reading.memory_used_mib if reading else None,
        "power_w": reading.power_w if reading else None,
        "engine_active": reading.engine_active if reading else None,
        "sampled_at": at if reading else None,
    }


def store(states: dict[tuple[str, int], GpuState], at: datetime, complete: bool = True) -> tuple[int, int]:
    """Upsert the inventory and insert this pass's samples. Returns (GPUs, samples offered).
    GPUs missing from an incomplete pass (a source failed) are left as they were: a source
    outage must not look like the fleet vanishing."""
    with transaction.atomic():
        known = {(node, index): pk for pk, node, index in Gpu.objects.values_list("pk", "node", "index")}
        new = [Gpu(node=s.node, index=s.index, first_seen_at=at) for key, s in states.items() if key not in known]
        if new:
            Gpu.objects.bulk_create(new, ignore_conflicts=True)  # a concurrent pass may have made some
            known = {(node, index): pk for pk, node, index in Gpu.objects.values_list("pk", "node", "index")}
        # One prepared UPDATE run for every row, not a model save per GPU.
        quote = connection.ops.quote_name
        sets = ", ".join(f"{quote(name)} = %s" for name in GPU_UPDATE_FIELDS)
        # Only quoted identifiers from the model are formatted in; every value is a parameter.
        sql = f"UPDATE {quote(Gpu._meta.db_table)} SET {sets} WHERE {quote('id')} = %s"  # noqa: S608
        adapted_at = connection.ops.adapt_datetimefield_value(at)
        rows = []
        for key, state in states.items():
            values = _gpu_values(state, at)
            row = [
                adapted_at if name in ("last_seen_at", "sampled_at") and values[name] is not None else values[name]
                for name in GPU_UPDATE_FIELDS
            ]
            rows.append((*row, known[key]))
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        gone = [pk for key, pk in known.items() if key not in states]
        if gone and complete:
            Gpu.objects.filter(pk__in=gone, present=True).update(
                present=False,
                allocated=False,
                launch=None,
                project=None,
                team=None,
                namespace="",
                pod="",
                utilization=None,
            )
    samples = []
    for key, state in states.items():
        reading, holder = state.reading, state.holder
        samples.append(
            (
                known[key],
                at,
                reading.utilization if reading else None,
                reading.memory_used_mib if reading else None,
                reading.power_w if reading else None,
                reading.engine_active if reading else None,
                holder is not None,
                holder.launch_id if holder else None,
                holder.project_id if holder else None,
                holder.team_id if holder else None,
                holder.namespace if holder else "",
            )
        )
    return len(states), insert_samples(samples)


def run_pass(sources: Sources | None = None, now: datetime | None = None) -> PassResult:
    """One sampler pass (what the `sample_gpus` task runs every PLINTH_GPU_SAMPLE_SECONDS)."""
    started = time.perf_counter()
    now = now or timezone.now()
    sources = sources if sources is not None else configured_sources()
    at = floor_time(now, resolution_seconds())
    result = PassResult(at=at)
    if not sources.names:
        return result
    nodes, claims, readings = collect(sources, now)
    complete = (sources.cluster is None or claims is not None) and len(readings) == len(sources.metrics)
    states = merge(nodes, claims, readings, local_launches())
    resolve_holders(states)
    result.gpus, result.samples = store(states, at, complete)
    result.allocated = sum(1 for s in states.values() if s.holder is not None)
    result.seconds = time.perf_counter() - started
    SourceStatus.objects.update_or_create(
        name="sampler",
        defaults={
            "configured": True,
            "ok": True,
            "mark": at,
            "gpus": result.gpus,
            "duration_ms": int(result.seconds * 1000),
            "checked_at": now,
            "message": f"{result.gpus} GPUs, {result.allocated} allocated",
        },
    )
    result.statuses = {s.name: s.message for s in SourceStatus.objects.all()}
    return result
