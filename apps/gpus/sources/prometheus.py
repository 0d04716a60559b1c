"""GPU figures from Prometheus scraping NVIDIA's dcgm-exporter.

One HTTP request per pass: the metrics are averaged over the sampler's resolution
(`avg_over_time`, so a sample stands for its whole minute rather than one instant of it),
each tagged with a `plinth_metric` label by `label_replace` and joined with `or` (range
functions drop the metric name, the tag puts it back).

dcgm-exporter's labels come in two spellings, depending on its version and on the scrape
configuration: `Hostname` or `hostname` for the node, and the pod holding a GPU as
`namespace`/`pod` or, when Prometheus keeps its own target labels under those names
(`honor_labels: false`), as `exported_namespace`/`exported_pod`. In the second case the
plain `namespace`/`pod` name the exporter's own pod, so once any series of a scrape job
carries the exported spelling, only that spelling is read for that job. Where no GPU of such
a job is held yet, nothing shows the renaming: PLINTH_PROMETHEUS_POD_LABELS=exported says
so up front (with Kubernetes configured the sampler also drops pods that hold no GPU)."""

from __future__ import annotations

from typing import Any

import requests

from apps.core.numbers import finite_or_none
from apps.gpus.sources.base import Reading, SourceError

# metric tag -> (dcgm-exporter metric, range function over the resolution)
METRICS: dict[str, tuple[str, str]] = {
    "util": ("DCGM_FI_DEV_GPU_UTIL", "avg_over_time"),
    "fb_used": ("DCGM_FI_DEV_FB_USED", "max_over_time"),  # the peak is what a job needs
    "fb_free": ("DCGM_FI_DEV_FB_FREE", "last_over_time"),
    "power": ("DCGM_FI_DEV_POWER_USAGE", "avg_over_time"),
    "engine": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "avg_over_time"),  # only with DCP metrics on
}
NODE_LABELS = ("Hostname", "hostname", "node", "kubernetes_node", "nodename")
TAG = "plinth_metric"


def build_query(window_seconds: int) -> str:
    parts = [
        f'label_replace({fn}({metric}[{window_seconds}s]), "{TAG}", "{tag}", "", "")'
        for tag, (metric, fn) in METRICS.items()
    ]
    return " or ".join(parts)


def _node(labels: dict[str, str], known_nodes: frozenset[str]) -> str:
    """The node a series belongs to. Several labels may name it (Hostname is the exporter's
    host name, which is the pod's name unless NODE_NAME is set); a candidate that is a known
    cluster node wins, else the first one present, else the host of `instance`."""
    candidates = [labels[key] for key in NODE_LABELS if labels.get(key)]
    instance = labels.get("instance", "")
    if instance:
        candidates.append(instance.rsplit(":", 1)[0])
    for candidate in candidates:
        if candidate in known_nodes:
            return candidate
    return candidates[0] if candidates else ""


POD_LABEL_MODES = ("auto", "exported", "plain")


def parse_vector(
    result: list[dict[str, Any]], known_nodes: frozenset[str] = frozenset(), pod_labels: str = "auto"
) -> list[Reading]:
    """Readings from the `result` of an instant query for build_query(). `pod_labels`:
    "auto" (per scrape job, see the module docstring), "exported" or "plain"."""
    renamed_jobs = {
        item.get("metric", {}).get("job", "")
        for item in result
        if item.get("metric", {}).get("exported_pod") or item.get("metric", {}).get("exported_namespace")
    }
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for item in result:
        labels: dict[str, str] = item.get("metric", {})
        value = finite_or_none((item.get("value") or [None, None])[1])
        tag = labels.get(TAG)
        try:
            index = int(labels.get("gpu", ""))
        except ValueError:
            continue  # not a per-GPU series (MIG or a node-level metric)
        node = _node(labels, known_nodes)
        if tag not in METRICS or not node:
            continue
        entry = merged.setdefault((node, index), {"node": node, "index": index})
        entry.setdefault("uuid", labels.get("UUID") or labels.get("uuid") or "")
        entry.setdefault("product", labels.get("modelName") or "")
        exported = pod_labels == "exported" or (pod_labels == "auto" and labels.get("job", "") in renamed_jobs)
        if exported:
            namespace, pod = labels.get("exported_namespace", ""), labels.get("exported_pod", "")
        else:
            namespace, pod = labels.get("namespace", ""), labels.get("pod", "")
        if pod and not entry.get("pod"):
            entry["namespace"], entry["pod"] = namespace, pod
        entry[tag] = value
    readings = []
    for entry in merged.values():
        fb_used, fb_free, engine = entry.get("fb_used"), entry.get("fb_free"), entry.get("engine")
        readings.append(
            Reading(
                node=entry["node"],
                index=entry["index"],
                uuid=entry.get("uuid", ""),
                product=entry.get("product", ""),
                utilization=entry.get("util"),
                memory_used_mib=round(fb_used) if fb_used is not None else None,
                memory_free_mib=round(fb_free) if fb_free is not None else None,
                power_w=entry.get("power"),
                # DCGM reports the ratio of time the graphics engine was active (0..1).
                engine_active=engine * 100 if engine is not None else None,
                namespace=entry.get("namespace", ""),
                pod=entry.get("pod", ""),
            )
        )
    readings.sort(key=lambda r: (r.node, r.index))
    return readings


class PrometheusSource:
    """Reads dcgm-exporter metrics from a Prometheus server's HTTP API."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        window_seconds: int = 60,
        timeout: float = 10.0,
        token: str = "",
        pod_labels: str = "auto",
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.pod_labels = pod_labels if pod_labels in POD_LABEL_MODES else "auto"
        self.window_seconds = window_seconds
        self.timeout = timeout
        self.token = token
        self.session = session or requests.Session()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (POST: the query is long)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.session.post(
                f"{self.url}/api/v1/query", data={"query": promql}, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise SourceError(f"Prometheus at {self.url} could not be reached: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise SourceError(f"Prometheus at {self.url} answered HTTP {response.status_code}, not JSON") from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise SourceError(f"Prometheus refused the query (HTTP {response.status_code}): {body.get('error', '')}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise SourceError(f"Prometheus answered a {data.get('resultType')!r}, not a vector")
        return list(data.get("result") or [])

    def readings(self, known_nodes: frozenset[str] = frozenset()) -> list[Reading]:
        return parse_vector(self.query(build_query(self.window_seconds)), known_nodes, self.pod_labels)
