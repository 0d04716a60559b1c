"""Which GPU sources are on, from the settings. Each is optional and configured by
environment:

- Prometheus with dcgm-exporter metrics: PLINTH_PROMETHEUS_URL (+ PLINTH_PROMETHEUS_TOKEN,
  PLINTH_PROMETHEUS_TIMEOUT, PLINTH_PROMETHEUS_POD_LABELS);
- Kubernetes nodes and pods: the compute settings (PLINTH_KUBECONFIG or
  PLINTH_KUBE_IN_CLUSTER), unless PLINTH_GPU_KUBERNETES is false;
- NVML on the worker host (the local backend): on unless PLINTH_GPU_NVML is false; a host
  without a driver simply has no GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from apps.gpus.models import resolution_seconds
from apps.gpus.sources.base import ClusterSource, MetricsSource


@dataclass
class Sources:
    """The sources one sampler pass reads: at most one cluster, any number of metrics sources."""

    cluster: ClusterSource | None = None
    metrics: list[MetricsSource] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return ([self.cluster.name] if self.cluster else []) + [m.name for m in self.metrics]


def prometheus_url() -> str:
    return str(settings.PLINTH_PROMETHEUS_URL or "").strip()


def kubernetes_configured() -> bool:
    cluster = bool(settings.PLINTH_KUBECONFIG or settings.PLINTH_KUBE_IN_CLUSTER)
    return cluster and bool(settings.PLINTH_GPU_KUBERNETES)


def nvml_enabled() -> bool:
    return bool(settings.PLINTH_GPU_NVML)


def configured_sources() -> Sources:
    """The sources the settings name (imports are lazy: a source that is off costs nothing)."""
    found = Sources()
    if kubernetes_configured():
        from apps.gpus.sources.kubernetes import KubernetesSource

        found.cluster = KubernetesSource()
    url = prometheus_url()
    if url:
        from apps.gpus.sources.prometheus import PrometheusSource

        found.metrics.append(
            PrometheusSource(
                url,
                window_seconds=resolution_seconds(),
                timeout=float(settings.PLINTH_PROMETHEUS_TIMEOUT),
                token=str(settings.PLINTH_PROMETHEUS_TOKEN or ""),
                pod_labels=str(settings.PLINTH_PROMETHEUS_POD_LABELS),
            )
        )
    if nvml_enabled():
        from apps.gpus.sources.nvml import NvmlSource

        found.metrics.append(NvmlSource())
    return found
