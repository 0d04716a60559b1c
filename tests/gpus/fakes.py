"""Test doubles for the GPU sources, and the small servers the tests run.

- FakeNvml: a FAKE of the pynvml functions NvmlSource calls (devices with memory,
  utilization and power; "no driver" makes nvmlInit fail as NVML does on a laptop).
- GpuFakeCluster: the compute tests' stateful FakeKubeGateway plus the cluster-wide pod
  list the GPU inventory needs, and furniture to put GPU pods on nodes.
- StaticMetrics: a metrics source that returns readings the test sets (idle scenarios).
- DcgmExporter: an HTTP server (a thread) serving dcgm-exporter's text format, for the REAL
  Prometheus the tests start to scrape.
- FakePrometheus: an HTTP server answering /api/v1/query with the vector a Prometheus
  would return for the sampler's query (the benchmark's 500 GPUs).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

from apps.gpus.sources.base import Reading
from apps.gpus.sources.prometheus import METRICS, TAG
from tests.compute.fakes import FakeKubeGateway, _fields_match

MIB = 2**20


# --- NVML ------------------------------------------------------------------------------------
class FakeNvmlError(Exception):
    """Stands for pynvml.NVMLError."""


@dataclass
class FakeDevice:
    name: str = "NVIDIA A100-SXM4-80GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total_mib: int = 81920
    memory_used_mib: int = 0
    utilization: int = 0
    memory_utilization: int = 0
    power_mw: int | None = 60_000  # None: NOT_SUPPORTED


@dataclass
class FakeNvml:
    """pynvml's functions over a list of devices. `driver=False`: nvmlInit fails."""

    devices: list[FakeDevice] = field(default_factory=list)
    driver: bool = True
    driver_version: str = "550.54.15"
    initialised: int = 0
    calls: list[str] = field(default_factory=list)

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if not self.driver:
            raise FakeNvmlError("NVML Shared Library Not Found")
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")
        self.initialised -= 1

    def _open(self) -> None:
        if self.initialised <= 0:
            raise FakeNvmlError("Uninitialized")

    def nvmlSystemGetDriverVersion(self) -> str:
        self._open()
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._open()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._open()
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> bytes:
        return handle.name.encode()  # older pynvml versions answer bytes

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        return handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Any:
        used = handle.memory_used_mib * MIB
        total = handle.memory_total_mib * MIB
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:
        return SimpleNamespace(gpu=handle.utilization, memory=handle.memory_utilization)

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        if handle.power_mw is None:
            raise FakeNvmlError("Not Supported")
        return handle.power_mw


# --- Kubernetes ------------------------------------------------------------------------------
class GpuFakeCluster(FakeKubeGateway):
    """FakeKubeGateway + list_all_pods (what GpuKubeGateway adds over the real client)."""

    def list_all_pods(self, field_selector: str = "") -> list[dict[str, Any]]:
        self._enter("list_all_pods")
        return [
            copy.deepcopy(pod)
            for pods in self.pods.values()
            for pod in pods.values()
            if all(_phase_term(pod, term) for term in field_selector.split(",") if term.strip())
        ]

    def add_gpu_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        gpus: int,
        labels: dict[str, str] | None = None,
        phase: str = "Running",
    ) -> None:
        """A pod someone (not Plinth's backend) made, bound to `node`, holding `gpus`."""
        pod = gpu_pod(namespace, name, node, gpus, labels, phase)
        status = pod.pop("status")
        self.pods[namespace][name] = self._stamp(pod, namespace)
        self.pods[namespace][name]["status"] = status


def _phase_term(pod: dict[str, Any], term: str) -> bool:
    """Field selector terms with != (the API server's semantics for status.phase)."""
    if "!=" in term:
        path, _, value = term.partition("!=")
        return not _fields_match(pod, f"{path.strip()}={value.strip()}")
    return _fields_match(pod, term.strip())


def gpu_pod(
    namespace: str, name: str, node: str, gpus: int, labels: dict[str, str] | None = None, phase: str = "Running"
) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "ghcr.io/example/train:1.0", "resources": {"limits": limits}}]
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
        "status": {"phase": phase},
    }


def gpu_node(name: str, gpus: int, product: str = "NVIDIA-A100-SXM4-80GB", memory_mib: int = 81920) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": str(memory_mib)},
        },
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}, "capacity": {"nvidia.com/gpu": str(gpus)}},
    }


# --- metrics set by the test -------------------------------------------------------------------
class StaticMetrics:
    """A metrics source whose readings the test sets: {(node, index): utilization} or full
    Readings. `fail` makes it raise SourceError (an outage)."""

    name = "prometheus"

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], Reading] = {}
        self.fail = ""

    def set(self, node: str, index: int, utilization: float | None, memory_used_mib: int = 1000, **extra: Any) -> None:
        self.values[(node, index)] = Reading(
            node=node, index=index, utilization=utilization, memory_used_mib=memory_used_mib, **extra
        )

    def readings(self, known_nodes: frozenset[str] = frozenset()) -> list[Reading]:
        if self.fail:
            from apps.gpus.sources.base import SourceError

            raise SourceError(self.fail)
        return list(self.values.values())


# --- dcgm-exporter ------------------------------------------------------------------------------
@dataclass
class ServedGpu:
    """One GPU as dcgm-exporter reports it (values in dcgm's units: MiB, W, ratio)."""

    gpu: int
    uuid: str
    model: str
    util: float
    fb_used: float
    fb_free: float
    power: float
    engine: float | None = None
    namespace: str = ""
    pod: str = ""


def dcgm_text(host: str, gpus: Iterable[ServedGpu], host_label: str = "Hostname") -> str:
    """dcgm-exporter's /metrics body: # HELP/# TYPE, then one line per GPU per metric, with
    its labels in its order; a GPU no pod holds has empty container/namespace/pod."""
    lines: list[str] = []
    metrics = [
        ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "util"),
        ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "fb_free"),
        ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "fb_used"),
        ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power"),
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active.", "engine"),
    ]
    served = list(gpus)
    for metric, help_text, attr in metrics:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        for g in served:
            value = getattr(g, attr)
            if value is None:
                continue
            labels = (
                f'gpu="{g.gpu}",UUID="{g.uuid}",pci_bus_id="00000000:{g.gpu + 7:02X}:00.0",device="nvidia{g.gpu}",'
                f'modelName="{g.model}",{host_label}="{host}",DCGM_FI_DRIVER_VERSION="550.54.15",'
                f'container="{"main" if g.pod else ""}",namespace="{g.namespace}",pod="{g.pod}"'
            )
            lines.append(f"{metric}{{{labels}}} {value:g}")
    return "\n".join(lines) + "\n"


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"http-{self.port}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class DcgmExporter(_Server):
    """Serves dcgm_text() at /metrics; `gpus` may be changed while it runs."""

    def __init__(self, host: str, gpus: list[ServedGpu], host_label: str = "Hostname") -> None:
        self.host, self.gpus, self.host_label = host, gpus, host_label
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                exporter.scrapes += 1
                body = dcgm_text(exporter.host, exporter.gpus, exporter.host_label).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        super().__init__(Handler)


def prometheus_vector(nodes: dict[str, list[ServedGpu]], at: float, host_label: str = "Hostname") -> dict[str, Any]:
    """What Prometheus answers to the sampler's query: one series per GPU per metric, no
    __name__ (range functions drop it), a plinth_metric tag, the exporter's labels."""
    result: list[dict[str, Any]] = []
    for host, gpus in nodes.items():
        for g in gpus:
            base: dict[str, str] = {
                "gpu": str(g.gpu),
                "UUID": g.uuid,
                "device": f"nvidia{g.gpu}",
                "modelName": g.model,
                host_label: host,
                "instance": "10.0.0.1:9400",
                "job": "dcgm-exporter",
            }
            if g.pod:
                base.update({"namespace": g.namespace, "pod": g.pod, "container": "main"})
            for tag in METRICS:  # ServedGpu's fields are named after the tags
                value = getattr(g, tag)
                if value is None:
                    continue
                labels = dict(base)
                labels[TAG] = tag
                result.append({"metric": labels, "value": [at, f"{value:g}"]})
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class FakePrometheus(_Server):
    """Answers POST/GET /api/v1/query with prometheus_vector(nodes) (the query is recorded,
    not evaluated: a FAKE of the one call the sampler makes)."""

    def __init__(self, nodes: dict[str, list[ServedGpu]]) -> None:
        self.nodes = nodes
        self.queries: list[str] = []
        self.body = b""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, query: str) -> None:
                import time
                from urllib.parse import parse_qs

                fake.queries.append(parse_qs(query).get("query", [""])[0])
                body = json.dumps(prometheus_vector(fake.nodes, time.time())).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length).decode())

            def do_GET(self) -> None:
                self._answer(self.path.partition("?")[2])

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
