"""Fixtures of the GPU tests: no host NVML unless a test brings a fake, the reclaim's
backend cancel captured instead of sent, a clock for sampler passes, and a REAL Prometheus
(Debian's package) scraping two dcgm-exporters served by the test suite.

The two exporters cover both label spellings: "gpu-a1" says `Hostname` and is scraped with
honor_labels (its namespace/pod stay as they are); "gpu-b1" says `hostname` and is scraped
without honor_labels, with target labels namespace/pod of its own, so Prometheus renames the
exporter's to exported_namespace/exported_pod, as a ServiceMonitor without honorLabels does.
Without /usr/bin/prometheus those tests skip, unless PLINTH_REQUIRE_PROMETHEUS=1 (CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from apps.gpus import services as gpu_services
from portal.celery import app as celery_app
from tests.conftest import _free_port
from tests.gpus.fakes import DcgmExporter, ServedGpu

PROMETHEUS = os.environ.get("PLINTH_PROMETHEUS_BIN", "/usr/bin/prometheus")
LAUNCH_PK = 9001  # the launch whose job pod the exporter names (tests create it with this pk)

SERVED_A = [
    ServedGpu(0, "GPU-a1000000-0000-4000-8000-000000000000", "NVIDIA A100-SXM4-80GB", 87, 40000, 41920, 312.5, 0.83,
              "plinth-demo-demo", f"plinth-{LAUNCH_PK}-x7k2q"),
    ServedGpu(1, "GPU-a1000000-0000-4000-8000-000000000001", "NVIDIA A100-SXM4-80GB", 0, 0, 81920, 61.0),
]  # fmt: skip
SERVED_B = [
    ServedGpu(0, "GPU-b1000000-0000-4000-8000-000000000000", "NVIDIA H100 80GB HBM3", 3, 1024, 80896, 90.25, 0.02,
              "research", "notebook-0"),
    ServedGpu(1, "GPU-b1000000-0000-4000-8000-000000000001", "NVIDIA H100 80GB HBM3", 55.5, 30000, 51920, 400.0, 0.6),
]  # fmt: skip
EXPORTER_TARGET = {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-7xk2p"}


@pytest.fixture(autouse=True)
def _gpu_settings(settings: Any) -> None:
    settings.PLINTH_GPU_NVML = False  # the host's NVML is not part of these tests
    settings.PLINTH_PROMETHEUS_URL = ""
    settings.PLINTH_KUBECONFIG = ""
    settings.PLINTH_KUBE_IN_CLUSTER = False
    settings.PLINTH_GPU_SAMPLE_SECONDS = 60
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture(autouse=True)
def _notices_delivered_at_once() -> Iterator[None]:
    """The notifications app's delivery task runs in this thread (no broker): the owner's
    email lands in mail.outbox once the change commits."""
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@dataclass
class Sent:
    tasks: list[tuple[str, tuple[Any, ...]]]


@pytest.fixture(autouse=True)
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Tasks the GPU services send after commit (the reclaim's backend cancel), recorded."""
    captured = Sent([])

    def record(task: Any, *args: Any) -> None:
        captured.tasks.append((task.name.rsplit(".", 1)[-1], args))

    monkeypatch.setattr(gpu_services, "enqueue_on_commit", record)
    return captured


class Clock:
    """Minutes on the sampler's grid, from a fixed start, so tests say "30 minutes later"."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def tick(self, minutes: float = 1) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now


@pytest.fixture
def clock() -> Clock:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return Clock(now - timedelta(hours=3))


# --- the real Prometheus ---------------------------------------------------------------------
@dataclass
class PrometheusServer:
    url: str
    exporters: dict[str, DcgmExporter]

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return list(response.json()["data"]["result"])


def _config(plain: DcgmExporter, renamed: DcgmExporter) -> str:
    labels = ", ".join(f'{k}: "{v}"' for k, v in EXPORTER_TARGET.items())
    return f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: dcgm-honor-labels
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{plain.port}"]
  - job_name: dcgm-target-labels
    honor_labels: false
    static_configs:
      - targets: ["127.0.0.1:{renamed.port}"]
        labels: {{{labels}}}
"""


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not Path(PROMETHEUS).exists() and not shutil.which("prometheus"):
        reason = f"{PROMETHEUS} is missing (apt-get install prometheus)"
        if os.environ.get("PLINTH_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"PLINTH_REQUIRE_PROMETHEUS=1 but {reason}")
        pytest.skip(reason)
    binary = PROMETHEUS if Path(PROMETHEUS).exists() else str(shutil.which("prometheus"))
    plain = DcgmExporter("gpu-a1", list(SERVED_A), host_label="Hostname")
    renamed = DcgmExporter("gpu-b1", list(SERVED_B), host_label="hostname")
    root = tmp_path_factory.mktemp("prometheus")
    (root / "prometheus.yml").write_text(_config(plain, renamed))
    port = _free_port()
    log = open(root / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", {"gpu-a1": plain, "gpu-b1": renamed})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                # Both exporters scraped at least twice: range functions then see values.
                if len(server.query("count_over_time(DCGM_FI_DEV_GPU_UTIL[1m]) >= 2")) == 4:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "prometheus did not scrape the exporters:\n" + (root / "prometheus.log").read_text()[-3000:]
                )
            time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        plain.close()
        renamed.close()
