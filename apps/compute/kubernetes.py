"""The `kubernetes` backend. The code lives in the `apps.compute.k8s` package (gateway, rate
limiter, manifests, status mapping, backend); this module is the name the registry imports."""

from apps.compute.k8s import (
    KubeApi,
    KubeGateway,
    KubernetesBackend,
    LimiterStats,
    RateLimiter,
    build_job_manifest,
    observe_job,
    selector_matches,
    shared_limiter,
)

__all__ = [
    "KubeApi",
    "KubeGateway",
    "KubernetesBackend",
    "LimiterStats",
    "RateLimiter",
    "build_job_manifest",
    "observe_job",
    "selector_matches",
    "shared_limiter",
]
