"""Reachability of the Kubernetes cluster, through the official client."""

from __future__ import annotations

from django.conf import settings


class ClusterNotConfigured(RuntimeError):
    pass


def cluster_status() -> str:
    """A one-line answer to "can Plinth talk to the cluster?" (raises when it cannot)."""
    if not (settings.PLINTH_KUBECONFIG or settings.PLINTH_KUBE_IN_CLUSTER):
        return "not configured (embedded mode uses the local backend)"
    from kubernetes import client, config

    configuration = client.Configuration()
    if settings.PLINTH_KUBE_IN_CLUSTER:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=settings.PLINTH_KUBECONFIG, client_configuration=configuration)
    api = client.VersionApi(client.ApiClient(configuration))
    info = api.get_code(_request_timeout=settings.PLINTH_KUBE_TIMEOUT)
    return f"{configuration.host} answered, Kubernetes {info.git_version}"
