"""GPU nodes and GPU-holding pods from the Kubernetes API.

Nodes: allocatable `nvidia.com/gpu` and the GPU feature discovery labels
(`nvidia.com/gpu.product`, `nvidia.com/gpu.memory` in MiB). Pods: every pod in every
namespace that is bound to a node, not finished, and requests GPUs; Plinth's own pods carry
`plinth.dev/launch`, `plinth.dev/project` and `plinth.dev/team`, other pods are known by
namespace. Requests go through the compute app's gateway (rate limit, timeout, error
mapping), extended here with the one call the backend never needs: pods of all namespaces."""

from __future__ import annotations

from typing import Any, Protocol

from apps.compute.base import BackendRejected, BackendUnavailable
from apps.compute.k8s.gateway import KubeGateway
from apps.compute.k8s.manifests import GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE
from apps.gpus.sources.base import NodeGpus, PodClaim, SourceError

# Finished pods hold no devices; the API server filters them out (callers filter again, as
# not every server honours field selectors).
LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class GpuClusterApi(Protocol):
    """The calls the GPU inventory needs (GpuKubeGateway, or a fake in tests)."""

    def list_nodes(self) -> list[dict[str, Any]]: ...

    def list_all_pods(self, field_selector: str = "") -> list[dict[str, Any]]: ...


class GpuKubeGateway(KubeGateway):
    """KubeGateway plus the cluster-wide pod list (same limiter, timeout and error mapping)."""

    def list_all_pods(self, field_selector: str = "") -> list[dict[str, Any]]:
        core = self._core()
        response = self._send(
            "list pods in all namespaces",
            "list_all_pods",
            lambda **kw: core.list_pod_for_all_namespaces(field_selector=field_selector, **kw),
        )
        return self._items(response)


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def pod_gpus(pod: dict[str, Any]) -> int:
    """GPUs a pod holds: the sum over its containers (limits, which must equal requests for
    extended resources), or the largest init container's, whichever is more (the
    scheduler's rule for effective requests)."""
    spec = pod.get("spec") or {}

    def amount(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        return _int(
            (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(GPU_RESOURCE)
        )

    main = sum(amount(c) for c in spec.get("containers") or [])
    init = max((amount(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


class KubernetesSource:
    """Inventory and allocation from the cluster."""

    name = "kubernetes"

    def __init__(self, api: GpuClusterApi | None = None) -> None:
        self.api: GpuClusterApi = api if api is not None else GpuKubeGateway()

    def _call(self, what: str, fn: Any, *args: Any) -> list[dict[str, Any]]:
        try:
            return list(fn(*args))
        except (BackendUnavailable, BackendRejected) as exc:
            raise SourceError(exc.message) from exc

    def nodes(self) -> list[NodeGpus]:
        found = []
        for node in self._call("list nodes", self.api.list_nodes):
            meta = node.get("metadata") or {}
            status = node.get("status") or {}
            count = _int((status.get("allocatable") or {}).get(GPU_RESOURCE))
            if count <= 0:
                count = _int((status.get("capacity") or {}).get(GPU_RESOURCE))
            if count <= 0:
                continue
            labels = meta.get("labels") or {}
            found.append(
                NodeGpus(
                    name=meta.get("name", ""),
                    count=count,
                    product=labels.get(GPU_PRODUCT_LABEL, ""),
                    memory_mib=_int(labels.get(GPU_MEMORY_LABEL)),
                    schedulable=not (node.get("spec") or {}).get("unschedulable"),
                )
            )
        return found

    def claims(self) -> list[PodClaim]:
        found = []
        for pod in self._call("list pods", self.api.list_all_pods, LIVE_PODS):
            meta = pod.get("metadata") or {}
            node = (pod.get("spec") or {}).get("nodeName") or ""
            phase = (pod.get("status") or {}).get("phase") or ""
            gpus = pod_gpus(pod)
            if not node or gpus <= 0 or phase in ("Succeeded", "Failed"):
                continue  # unscheduled pods and finished ones hold no device
            found.append(
                PodClaim(
                    namespace=meta.get("namespace", ""),
                    name=meta.get("name", ""),
                    node=node,
                    gpus=gpus,
                    labels=dict(meta.get("labels") or {}),
                )
            )
        found.sort(key=lambda c: (c.node, c.namespace, c.name))
        return found
