"""Kubernetes inventory and allocation, run against the stateful fake (GpuFakeCluster) and
against kmock's emulator over HTTP through the real client (GpuKubeGateway): GPU nodes,
pods holding GPUs mapped to launches, projects or namespaces, finished and unscheduled
pods holding nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from apps.accounts.models import User
from apps.compute.k8s import KubernetesBackend, RateLimiter
from apps.compute.k8s.manifests import job_labels
from apps.gpus.config import Sources
from apps.gpus.models import Gpu, SourceStatus
from apps.gpus.sampler import run_pass
from apps.gpus.sources.kubernetes import GpuKubeGateway, KubernetesSource, pod_gpus
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from tests.compute.fakes import JobController, make_launch
from tests.compute.kmock_server import Emulator
from tests.gpus.fakes import GpuFakeCluster, StaticMetrics, gpu_node, gpu_pod

pytestmark = pytest.mark.django_db


class Cluster:
    """One way to put nodes and pods on a cluster, for the fake and for kmock alike."""

    def __init__(self, kind: str, emulator: Emulator | None = None) -> None:
        self.kind = kind
        if emulator is not None:
            api_client = emulator.api_client()
            self.core = client.CoreV1Api(api_client)
            self.api: Any = GpuKubeGateway(api_client, limiter=RateLimiter(1000), timeout=5)
        else:
            self.api = GpuFakeCluster()

    def add_node(self, name: str, gpus: int, product: str = "NVIDIA-A100-SXM4-80GB") -> None:
        node = gpu_node(name, gpus, product)
        if self.kind == "fake":
            self.api.nodes.append(self.api._stamp(node, ""))
            return
        status = node.pop("status")
        body: Any = node  # the client turns dicts into its models
        self.core.create_node(body, _preload_content=False)
        self.core.patch_node_status(name, {"status": status}, _preload_content=False)

    def add_pod(self, namespace: str, name: str, node: str, gpus: int, labels: dict[str, str] | None = None,
                phase: str = "Running") -> None:  # fmt: skip
        if self.kind == "fake":
            self.api.add_gpu_pod(namespace, name, node, gpus, labels, phase)
            return
        pod: Any = gpu_pod(namespace, name, node, gpus, labels, phase)
        status = pod.pop("status")
        self.core.create_namespaced_pod(namespace, pod, _preload_content=False)
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status}, _preload_content=False)


@pytest.fixture(params=["fake", "kmock"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.param == "fake":
        yield Cluster("fake")
        return
    emulator = Emulator()
    try:
        yield Cluster("kmock", emulator)
    finally:
        emulator.close()


def held(gpu: Gpu) -> tuple[Any, ...]:
    return (gpu.launch_id, gpu.project_id, gpu.namespace, gpu.pod) if gpu.allocated else ("free",)


def test_nodes_and_gpu_pods_become_the_inventory_and_its_holders(
    cluster: Cluster, project: Project, other_project: Project, lin: User
) -> None:
    launch = make_launch(project, lin, status=Status.RUNNING, gpus=2)
    cluster.add_node("gpu-node-1", 4)
    cluster.add_node("gpu-node-2", 2, product="NVIDIA-H100-80GB-HBM3")
    cluster.add_node("cpu-node", 0)
    ns = project.namespace
    cluster.add_pod(ns, f"plinth-{launch.pk}-abcde", "gpu-node-1", 2, {**job_labels(launch)})
    cluster.add_pod(other_project.namespace, "notebook-0", "gpu-node-2", 1)  # in a project's namespace
    cluster.add_pod("research", "someone-else", "gpu-node-1", 1)  # not Plinth's at all
    cluster.add_pod("research", "finished", "gpu-node-2", 1, phase="Succeeded")
    cluster.add_pod("research", "unscheduled", "", 1, phase="Pending")
    cluster.add_pod("research", "cpu-only", "gpu-node-2", 0)

    source = KubernetesSource(cluster.api)
    assert [(n.name, n.count, n.product) for n in source.nodes()] == [
        ("gpu-node-1", 4, "NVIDIA-A100-SXM4-80GB"),
        ("gpu-node-2", 2, "NVIDIA-H100-80GB-HBM3"),
    ]
    assert {(c.namespace, c.name, c.gpus) for c in source.claims()} == {
        (ns, f"plinth-{launch.pk}-abcde", 2),
        (other_project.namespace, "notebook-0", 1),
        ("research", "someone-else", 1),
    }
    result = run_pass(Sources(cluster=source))
    assert (result.gpus, result.allocated) == (6, 4)
    gpus = {g.label: held(g) for g in Gpu.objects.all()}
    job_pod = f"plinth-{launch.pk}-abcde"
    # Without the exporter's mapping, a node's pods take its lowest free indexes, in name order.
    assert gpus == {
        "gpu-node-1/0": (launch.pk, project.pk, ns, job_pod),
        "gpu-node-1/1": (launch.pk, project.pk, ns, job_pod),
        "gpu-node-1/2": (None, None, "research", "someone-else"),
        "gpu-node-1/3": ("free",),
        "gpu-node-2/0": (None, other_project.pk, other_project.namespace, "notebook-0"),
        "gpu-node-2/1": ("free",),
    }
    status = SourceStatus.objects.get(name="kubernetes")
    assert (status.ok, status.gpus) == (True, 6)


def test_metrics_name_the_gpu_a_pod_holds(cluster: Cluster, project: Project, lin: User) -> None:
    """dcgm-exporter's pod mapping says which index; Kubernetes says whether it is a holder."""
    launch = make_launch(project, lin, status=Status.RUNNING, gpus=1)
    cluster.add_node("gpu-node-1", 2)
    pod = f"plinth-{launch.pk}-abcde"
    cluster.add_pod(project.namespace, pod, "gpu-node-1", 1, job_labels(launch))
    metrics = StaticMetrics()
    metrics.set("gpu-node-1", 0, 0.0)
    metrics.set("gpu-node-1", 1, 97.0, namespace=project.namespace, pod=pod)
    run_pass(Sources(cluster=KubernetesSource(cluster.api), metrics=[metrics]))
    gpus = {g.label: g for g in Gpu.objects.all()}
    assert gpus["gpu-node-1/1"].launch_id == launch.pk and gpus["gpu-node-1/1"].utilization == 97.0
    assert not gpus["gpu-node-1/0"].allocated
    assert gpus["gpu-node-1/1"].sources == "kubernetes,prometheus"


def test_a_launch_submitted_and_run_on_the_fake_cluster_holds_its_gpu_until_it_ends(
    project: Project, lin: User
) -> None:
    fake = GpuFakeCluster()
    fake.add_node("gpu-node-1", gpus=2, product="NVIDIA-A100-SXM4-80GB", memory_mib=81920)
    launch = make_launch(project, lin, status=Status.RUNNING, gpus=1)
    KubernetesBackend(fake).submit(launch)
    controller = JobController(fake, node="gpu-node-1")
    controller.run(project.namespace, launch.job_name)
    source = Sources(cluster=KubernetesSource(fake))
    run_pass(source)
    first = Gpu.objects.get(node="gpu-node-1", index=0)
    assert (first.launch_id, first.memory_total_mib) == (launch.pk, 81920)
    controller.succeed(project.namespace, launch.job_name)
    Launch.objects.filter(pk=launch.pk).update(status=Status.SUCCEEDED)
    run_pass(source)
    assert not Gpu.objects.filter(allocated=True).exists()
    assert fake.calls["list_all_pods"] == 2 and fake.calls["list_nodes"] == 2


def test_a_cluster_outage_is_recorded_and_does_not_empty_the_fleet(project: Project) -> None:
    fake = GpuFakeCluster()
    fake.add_node("gpu-node-1", gpus=2)
    source = Sources(cluster=KubernetesSource(fake))
    run_pass(source)
    from apps.compute.base import BackendUnavailable

    fake.outage = BackendUnavailable("The Kubernetes API server could not be reached")
    run_pass(source)
    status = SourceStatus.objects.get(name="kubernetes")
    assert not status.ok and "could not be reached" in status.message
    assert Gpu.objects.filter(present=True).count() == 2


def test_a_gpu_gone_from_the_cluster_leaves_the_fleet(project: Project) -> None:
    fake = GpuFakeCluster()
    fake.add_node("gpu-node-1", gpus=2)
    source = Sources(cluster=KubernetesSource(fake))
    run_pass(source)
    fake.nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] = "1"  # a GPU fell off the bus
    run_pass(source)
    assert [g.label for g in Gpu.objects.present()] == ["gpu-node-1/0"]


def test_effective_gpu_requests_follow_the_schedulers_rule() -> None:
    pod = gpu_pod("ns", "p", "n", 1)
    pod["spec"]["containers"].append({"name": "side", "resources": {"requests": {"nvidia.com/gpu": "1"}}})
    pod["spec"]["initContainers"] = [{"name": "init", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
    assert pod_gpus(pod) == 4
    del pod["spec"]["initContainers"]
    assert pod_gpus(pod) == 2
