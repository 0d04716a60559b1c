"""NVML behind its interface: the reading code runs against FakeNvml (no GPU here), the local
backend's launches hold the GPUs it handed out, the probe prints JSON and exits 0."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from apps.accounts.models import User
from apps.gpus.config import Sources
from apps.gpus.models import Gpu, GpuSample, SourceStatus
from apps.gpus.nvml_probe import main, probe
from apps.gpus.sampler import run_pass
from apps.gpus.sources.nvml import NvmlSource
from apps.launches.models import Launch, Status
from apps.projects.models import Project
from tests.compute.fakes import make_launch
from tests.gpus.fakes import FakeDevice, FakeNvml

ROOT = Path(__file__).resolve().parents[2]


def two_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeDevice(uuid="GPU-0", memory_used_mib=20480, utilization=93, memory_utilization=40, power_mw=287_500),
            FakeDevice(name="NVIDIA L4", uuid="GPU-1", memory_total_mib=23034, utilization=0, power_mw=None),
        ]
    )


def test_nvml_figures_are_read_into_readings() -> None:
    nvml = two_gpus()
    readings = NvmlSource(nvml, hostname="worker-1").readings()
    assert [(r.node, r.index, r.uuid, r.product) for r in readings] == [
        ("worker-1", 0, "GPU-0", "NVIDIA A100-SXM4-80GB"),
        ("worker-1", 1, "GPU-1", "NVIDIA L4"),
    ]
    first, second = readings
    assert (first.utilization, first.memory_used_mib, first.memory_free_mib, first.power_w) == (93, 20480, 61440, 287.5)
    assert (second.utilization, second.power_w) == (0, None)  # power NOT_SUPPORTED on this board
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown" and nvml.initialised == 0


def test_a_host_without_a_driver_has_no_gpus() -> None:
    assert NvmlSource(FakeNvml(driver=False)).readings() == []


@pytest.mark.django_db
def test_the_local_backends_launch_holds_the_gpus_it_was_given(project: Project, lin: User) -> None:
    host = socket.gethostname()
    launch = make_launch(project, lin, backend="local", status=Status.RUNNING, gpus=1)
    Launch.objects.filter(pk=launch.pk).update(local_host=host, local_pid=4242, gpu_devices="1")
    result = run_pass(Sources(metrics=[NvmlSource(two_gpus(), hostname=host)]))
    assert (result.gpus, result.allocated) == (2, 1)
    held = Gpu.objects.get(node=host, index=1)
    assert (held.launch_id, held.project_id, held.product, held.memory_total_mib) == (
        launch.pk,
        project.pk,
        "NVIDIA L4",
        23034,
    )
    assert GpuSample.objects.get(gpu=held).launch_id == launch.pk
    assert not Gpu.objects.get(node=host, index=0).allocated
    assert SourceStatus.objects.get(name="nvml").message == "2 GPUs"


@pytest.mark.django_db
def test_nvml_without_gpus_says_so() -> None:
    run_pass(Sources(metrics=[NvmlSource(FakeNvml(driver=False))]))
    assert SourceStatus.objects.get(name="nvml").message.startswith("no GPUs on this host")


def test_the_probe_reports_the_devices_as_json() -> None:
    out = io.StringIO()
    assert main(out, two_gpus()) == 0
    report = json.loads(out.getvalue())
    assert (report["available"], report["count"], report["driver_version"]) == (True, 2, "550.54.15")
    assert report["gpus"][0] == {
        "index": 0,
        "name": "NVIDIA A100-SXM4-80GB",
        "uuid": "GPU-0",
        "memory_total_mib": 81920,
        "memory_used_mib": 20480,
        "memory_free_mib": 61440,
        "utilization_gpu": 93.0,
        "utilization_memory": 40.0,
        "power_w": 287.5,
    }


def test_the_probe_says_why_there_is_nothing() -> None:
    report = probe(FakeNvml(driver=False))
    assert (report["available"], report["count"]) == (False, 0)
    assert "NVML did not start" in report["error"]


def test_the_probe_runs_as_a_module_without_django() -> None:
    """What the owner runs on a lent GPU machine: here (no driver) it reports none, exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "apps.gpus.nvml_probe"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"available", "count", "gpus", "driver_version", "error"}
    assert report["count"] == len(report["gpus"])
