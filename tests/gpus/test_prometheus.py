"""The Prometheus source against a REAL Prometheus (Debian's package, started by the
`prometheus` fixture) scraping dcgm-exporters served by the test suite: the sampler's
figures are the ones served, under both label spellings."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.gpus.config import Sources
from apps.gpus.models import Gpu, GpuSample
from apps.gpus.sampler import run_pass
from apps.gpus.sources.base import SourceError
from apps.gpus.sources.prometheus import PrometheusSource, build_query, parse_vector
from apps.launches.models import Status
from apps.projects.models import Project
from tests.compute.fakes import make_launch
from tests.gpus.conftest import EXPORTER_TARGET, LAUNCH_PK, SERVED_A, SERVED_B, PrometheusServer

pytestmark = pytest.mark.django_db


def by_gpu(readings: list) -> dict:
    return {(r.node, r.index): r for r in readings}


def test_the_exporters_are_scraped_with_both_label_spellings(prometheus: PrometheusServer) -> None:
    """Proof the setup is what it claims: gpu-b1's pod labels reach Prometheus renamed."""
    series = {s["metric"]["gpu"] + "@" + s["metric"].get("Hostname", s["metric"].get("hostname", "")): s["metric"]
              for s in prometheus.query("DCGM_FI_DEV_GPU_UTIL")}  # fmt: skip
    assert series["0@gpu-a1"]["pod"] == f"plinth-{LAUNCH_PK}-x7k2q" and "exported_pod" not in series["0@gpu-a1"]
    assert "Hostname" in series["0@gpu-a1"] and "hostname" in series["0@gpu-b1"]
    assert series["0@gpu-b1"]["exported_pod"] == "notebook-0"
    assert series["0@gpu-b1"]["exported_namespace"] == "research"
    assert series["1@gpu-b1"]["pod"] == EXPORTER_TARGET["pod"]  # the exporter's own pod, not a holder
    assert "exported_pod" not in series["1@gpu-b1"]


def test_the_source_reads_what_the_exporters_served(prometheus: PrometheusServer) -> None:
    readings = by_gpu(PrometheusSource(prometheus.url).readings())
    assert set(readings) == {("gpu-a1", 0), ("gpu-a1", 1), ("gpu-b1", 0), ("gpu-b1", 1)}
    for host, served in (("gpu-a1", SERVED_A), ("gpu-b1", SERVED_B)):
        for gpu in served:
            reading = readings[(host, gpu.gpu)]
            assert reading.uuid == gpu.uuid
            assert reading.product == gpu.model
            assert reading.utilization == pytest.approx(gpu.util)
            assert reading.memory_used_mib == gpu.fb_used
            assert reading.memory_free_mib == gpu.fb_free
            assert reading.power_w == pytest.approx(gpu.power)
            if gpu.engine is None:
                assert reading.engine_active is None
            else:
                assert reading.engine_active == pytest.approx(gpu.engine * 100)
    # Who holds each GPU, under each spelling: the exporter's own pod holds nothing.
    assert (readings[("gpu-a1", 0)].namespace, readings[("gpu-a1", 0)].pod) == (
        "plinth-demo-demo",
        f"plinth-{LAUNCH_PK}-x7k2q",
    )
    assert readings[("gpu-a1", 1)].pod == ""
    assert (readings[("gpu-b1", 0)].namespace, readings[("gpu-b1", 0)].pod) == ("research", "notebook-0")
    assert readings[("gpu-b1", 1)].pod == ""


def test_a_sampler_pass_stores_the_served_figures_and_holders(
    prometheus: PrometheusServer, project: Project, lin: User
) -> None:
    launch = make_launch(project, lin, pk=LAUNCH_PK, status=Status.RUNNING, gpus=1)
    result = run_pass(Sources(metrics=[PrometheusSource(prometheus.url)]))
    assert (result.gpus, result.allocated, result.samples) == (4, 2, 4)
    gpus = {g.label: g for g in Gpu.objects.all()}
    held = gpus["gpu-a1/0"]
    assert (held.launch_id, held.project_id, held.team_id) == (launch.pk, project.pk, project.team_id)
    assert held.utilization == pytest.approx(87) and held.memory_used_mib == 40000
    assert held.memory_total_mib == 40000 + 41920  # no node labels: used + free
    assert held.product == "NVIDIA A100-SXM4-80GB" and held.sources == "prometheus"
    foreign = gpus["gpu-b1/0"]
    assert (foreign.allocated, foreign.launch_id, foreign.project_id) == (True, None, None)
    assert (foreign.namespace, foreign.pod) == ("research", "notebook-0")
    assert not gpus["gpu-a1/1"].allocated and not gpus["gpu-b1/1"].allocated
    samples = {(s.gpu_id, s.at): s for s in GpuSample.objects.all()}
    assert len(samples) == 4
    sample = samples[(held.pk, result.at)]
    assert (sample.utilization, sample.memory_used_mib, sample.launch_id) == (pytest.approx(87), 40000, LAUNCH_PK)
    assert sample.power_w == pytest.approx(312.5) and sample.engine_active == pytest.approx(83)
    busy = samples[(gpus["gpu-b1/1"].pk, result.at)]
    assert (busy.utilization, busy.allocated) == (pytest.approx(55.5), False)


def test_an_unreachable_prometheus_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="could not be reached"):
        PrometheusSource("http://127.0.0.1:9", timeout=1).readings()


# --- the label logic on its own (runs without Prometheus too) ---------------------------------
def series(metric: str, value: float, **labels: str) -> dict:
    return {"metric": {"plinth_metric": metric, "gpu": "0", **labels}, "value": [0, str(value)]}


def test_a_known_cluster_node_wins_over_the_exporters_pod_name() -> None:
    found = parse_vector(
        [series("util", 5, Hostname="dcgm-exporter-6ldbb", node="gpu-node-7", instance="10.1.2.3:9400")],
        frozenset({"gpu-node-7"}),
    )
    assert [(r.node, r.utilization) for r in found] == [("gpu-node-7", 5.0)]


def test_the_exported_spelling_is_read_per_scrape_job() -> None:
    rows = [
        series("util", 1, Hostname="a", job="renamed", namespace="gpu-operator", pod="exporter",
               exported_namespace="team", exported_pod="job-0"),
        {**series("util", 2, Hostname="a", job="renamed", namespace="gpu-operator", pod="exporter"),
         "metric": {"plinth_metric": "util", "gpu": "1", "Hostname": "a", "job": "renamed",
                    "namespace": "gpu-operator", "pod": "exporter"}},
        series("util", 3, hostname="b", job="plain", namespace="ml", pod="train-0"),
    ]  # fmt: skip
    found = {(r.node, r.index): (r.namespace, r.pod) for r in parse_vector(rows)}
    assert found == {("a", 0): ("team", "job-0"), ("a", 1): ("", ""), ("b", 0): ("ml", "train-0")}
    forced = {(r.node, r.index): r.pod for r in parse_vector(rows[2:], pod_labels="exported")}
    assert forced == {("b", 0): ""}


def test_the_query_averages_each_metric_over_the_resolution() -> None:
    query = build_query(60)
    assert "avg_over_time(DCGM_FI_DEV_GPU_UTIL[60s])" in query
    assert "max_over_time(DCGM_FI_DEV_FB_USED[60s])" in query
    assert query.count(" or ") == 4
