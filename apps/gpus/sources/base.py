"""What the sources report, as plain values: the sampler merges them into Gpu rows and
samples without knowing which source said what."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class SourceError(Exception):
    """A source could not be read this pass (unreachable, refused, nonsense answer). The
    sampler records it on the source's status and carries on with the other sources."""


@dataclass(frozen=True)
class Reading:
    """One GPU's figures as a metrics source reports them. `namespace`/`pod`: the pod using
    the GPU, when the source knows it (dcgm-exporter's pod mapping)."""

    node: str
    index: int
    uuid: str = ""
    product: str = ""
    utilization: float | None = None  # percent of time a kernel ran (DCGM_FI_DEV_GPU_UTIL)
    memory_used_mib: int | None = None
    memory_free_mib: int | None = None
    power_w: float | None = None
    engine_active: float | None = None  # percent (DCGM_FI_PROF_GR_ENGINE_ACTIVE x 100)
    namespace: str = ""
    pod: str = ""


@dataclass(frozen=True)
class NodeGpus:
    """A cluster node's GPUs as Kubernetes reports them (allocatable `nvidia.com/gpu`)."""

    name: str
    count: int
    product: str = ""
    memory_mib: int = 0
    schedulable: bool = True


@dataclass(frozen=True)
class PodClaim:
    """A pod on a node holding GPUs (its `nvidia.com/gpu` requests), with its labels."""

    namespace: str
    name: str
    node: str
    gpus: int
    labels: dict[str, str] = field(default_factory=dict)


class MetricsSource(Protocol):
    """Prometheus (dcgm-exporter) or NVML: current figures of every GPU it sees."""

    name: str

    def readings(self, known_nodes: frozenset[str] = frozenset()) -> list[Reading]: ...


class ClusterSource(Protocol):
    """Kubernetes: GPU nodes and the pods holding GPUs."""

    name: str

    def nodes(self) -> list[NodeGpus]: ...

    def claims(self) -> list[PodClaim]: ...
