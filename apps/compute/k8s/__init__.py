"""The Kubernetes backend, split by concern: `gateway` (the only code that calls the
official client), `ratelimit`, `manifests` (the Job for a launch), `status` (cluster state →
Observation) and `backend` (the Backend protocol)."""

from apps.compute.k8s.backend import KubernetesBackend
from apps.compute.k8s.gateway import KubeApi, KubeGateway, selector_matches
from apps.compute.k8s.manifests import build_job_manifest
from apps.compute.k8s.ratelimit import LimiterStats, RateLimiter, shared_limiter
from apps.compute.k8s.status import observe_job

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
