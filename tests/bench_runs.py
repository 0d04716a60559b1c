"""`python -m tests.bench_runs`: comparing runs, MLflow's own way and Plinth's. Prints tables.

Seeds a fresh SQLite MLflow store through the MLflow client (log_batch) with 100 runs x 10
metrics x 1,000 steps, starts a real `mlflow server` on it (its defaults: 4 uvicorn
workers) and measures, in one run:

(a)  what MLflow's UI asks for the same charts: get-history-bulk-interval, 320 points a run,
     100 runs a call, one call per metric, one after the other;
(a') the same calls 6 at a time (a browser's connections per host), for fairness;
(b)  Plinth's GET /api/v1/runs/compare/ for the same runs and metrics with max_points=1000,
     cold (empty cache: every history read from MLflow, downsampled, stored) and warm,
     through django.test.Client as a signed-in user against a throwaway SQLite database;
(c)  the same cold compare reading MLflow's store directly (PLINTH_MLFLOW_STORE_URI at the
     server's SQLite file: one SQL query, cut by the database);
(d)  the first compare after the runs finished: the cache emptied, the background task a
     worker runs when runs end (cache_finished_runs) run once, then one compare.

Then the same for 1,000 runs x 5 metrics x 200 steps in a store and server of their own,
through Plinth's endpoint only: MLflow's UI caps its charts at 100-500 runs, and its
bulk-interval endpoint takes ~15 s a call on that store (50 calls: PLINTH_BENCH_LARGE_UI=1
measures them anyway).

Knobs (the defaults are the issue's sizes; e.g. PLINTH_BENCH_RUNS=20 PLINTH_BENCH_STEPS=200
PLINTH_BENCH_LARGE_RUNS=0 for a quick run): PLINTH_BENCH_RUNS / _METRICS / _STEPS,
PLINTH_BENCH_LARGE_RUNS / _LARGE_METRICS / _LARGE_STEPS (0 runs: skip), PLINTH_BENCH_STORE_DIR
(a folder keeping the seeded stores between runs: seeding takes minutes on two cores),
PLINTH_BENCH_WARM_REPEATS (3), PLINTH_BENCH_MLFLOW_WORKERS (4).
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


RUNS, METRICS, STEPS = (
    _env("PLINTH_BENCH_RUNS", 100),
    _env("PLINTH_BENCH_METRICS", 10),
    _env("PLINTH_BENCH_STEPS", 1000),
)
LARGE = (
    _env("PLINTH_BENCH_LARGE_RUNS", 1000),
    _env("PLINTH_BENCH_LARGE_METRICS", 5),
    _env("PLINTH_BENCH_LARGE_STEPS", 200),
)
WARM_REPEATS = _env("PLINTH_BENCH_WARM_REPEATS", 3)
MLFLOW_WORKERS = _env("PLINTH_BENCH_MLFLOW_WORKERS", 4)  # `mlflow server`'s default
LARGE_UI = _env("PLINTH_BENCH_LARGE_UI", 0)
UI_POINTS = 320  # what MLflow's UI asks per run for a chart
UI_RUNS_PER_CALL = 100
BROWSER_CONNECTIONS = 6
Rows = list[tuple[str, str]]


# --- MLflow: a seeded store and a real server --------------------------------------------
def seed(store: Path, runs: int, metrics: int, steps: int) -> tuple[str, list[str], float]:
    """An experiment of `runs` finished runs, each with `metrics` histories of `steps`
    points (a noisy decaying curve with a few spikes), logged with the MLflow client's
    log_batch (1,000 points a call, MLflow's limit). Reused when already in the store."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    name = f"bench/{runs}x{metrics}x{steps}"
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        found = client.search_runs([existing.experiment_id], max_results=50_000)
        if len(found) == runs:
            return existing.experiment_id, [r.info.run_id for r in found], 0.0
        client.delete_experiment(existing.experiment_id)
        name += f"-{int(time.time())}"
    started = time.perf_counter()
    experiment_id = client.create_experiment(name)
    rng = random.Random(runs * 7 + steps)
    ids = []
    for r in range(runs):
        run_id = client.create_run(experiment_id, run_name=f"run-{r:04d}").info.run_id
        now = int(time.time() * 1000)
        points = [
            Metric(f"metric_{m}", math.exp(-s / steps * 3) * (1 + m) + rng.random() * 0.05, now + s, s)
            for m in range(metrics)
            for s in range(steps)
        ]
        for spike in range(0, len(points), max(1, len(points) // 3)):
            points[spike] = Metric(points[spike].key, 25.0, points[spike].timestamp, points[spike].step)
        for start in range(0, len(points), 1000):
            params = [Param("lr", str(10 ** -(1 + r % 4))), Param("seed", str(r))] if start == 0 else []
            client.log_batch(run_id, metrics=points[start : start + 1000], params=params)
        client.set_terminated(run_id)
        ids.append(run_id)
    return experiment_id, ids, time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(store: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "mlflow-server.log", "wb")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}"),
            *("--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(MLFLOW_WORKERS)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600  # a loaded machine starts uvicorn's workers slowly
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    stop_server(proc)
    raise RuntimeError("mlflow server did not start:\n" + (folder / "mlflow-server.log").read_text()[-3000:])


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the uvicorn workers go too
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def mlflow_ui_way(url: str, run_ids: list[str], keys: list[str], parallel: int) -> tuple[float, int]:
    """MLflow's UI for these charts: bulk-interval at 320 points, 100 runs a call, per metric."""
    calls = [(key, run_ids[i : i + UI_RUNS_PER_CALL]) for key in keys for i in range(0, len(run_ids), UI_RUNS_PER_CALL)]

    def fetch(call: tuple[str, list[str]]) -> int:
        key, chunk = call
        response = requests.get(
            f"{url}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
            params={"run_ids": chunk, "metric_key": key, "max_results": str(UI_POINTS)},
            timeout=600,
        )
        response.raise_for_status()
        return len(response.json().get("metrics", []))

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        points = sum(pool.map(fetch, calls))
    return time.perf_counter() - started, points


# --- Plinth ---------------------------------------------------------------------------------
def setup_portal(data_dir: str, tracking_uri: str) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("PLINTH_MLFLOW_TIMEOUT", "30")
    from tests.bench import setup

    setup(data_dir)


def plinth_way(
    experiment_ids: list[str], ids: list[str], keys: list[str], store_uri: str = ""
) -> tuple[Rows, dict[str, float]]:
    """Rows of figures, and the figures in seconds (cold, warm, store, first_after_end)."""
    from django.conf import settings
    from django.test import Client

    from apps.accounts.models import Membership, Team, User
    from apps.projects.models import ExperimentState, Project
    from apps.tracking.gateway import MlflowGateway
    from apps.tracking.models import MetricSeries
    from apps.tracking.tasks import cache_finished_runs

    user, _ = User.objects.get_or_create(username="bench-viewer")
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "viewer"})
    for experiment_id in experiment_ids:
        Project.objects.get_or_create(
            team=team,
            slug=f"e{experiment_id}",
            defaults={
                "name": f"bench {experiment_id}",
                "namespace": f"bench-{experiment_id}",
                "mlflow_experiment_name": f"bench/{experiment_id}",
                "mlflow_experiment_id": experiment_id,
                "mlflow_state": ExperimentState.LINKED,
            },
        )
    calls: Counter[str] = Counter()
    for name in ("search_runs", "get_history_bulk", "get_metric_history"):
        original = getattr(MlflowGateway, name)

        def counted(self: Any, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        setattr(MlflowGateway, name, counted)
    client = Client()
    client.force_login(user)
    url = f"/api/v1/runs/compare/?run_ids={','.join(ids)}&metrics={','.join(keys)}&max_points=1000"

    def call() -> tuple[float, bytes]:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"compare answered {response.status_code}: {response.content[:500]!r}")
        return elapsed, response.content

    settings.PLINTH_MLFLOW_STORE_URI = ""
    MetricSeries.objects.filter(run_id__in=ids).delete()
    cold, cold_body = call()
    cold_calls = dict(calls)
    calls.clear()
    warm_times = []
    warm_body = b""
    for _ in range(WARM_REPEATS):
        elapsed, warm_body = call()
        warm_times.append(elapsed)
    warm = sorted(warm_times)[len(warm_times) // 2]
    rows = MetricSeries.objects.filter(run_id__in=ids).count()
    figures = {"cold": cold, "warm": warm}
    warm_calls = dict(calls)
    extra: Rows = []
    if store_uri:
        settings.PLINTH_MLFLOW_STORE_URI = store_uri
        MetricSeries.objects.filter(run_id__in=ids).delete()
        calls.clear()
        figures["store"], store_body = call()
        figures["store_warm"] = sorted(call()[0] for _ in range(WARM_REPEATS))[WARM_REPEATS // 2]
        extra += [
            ("(c) Plinth compare, cold, from MLflow's store (SQL)", f"{figures['store']:.2f} s"),
            (f"(c) warm with the store (exact checks, median of {WARM_REPEATS})", f"{figures['store_warm']:.3f} s"),
            ("    MLflow REST history calls it made", str(calls["get_history_bulk"] + calls["get_metric_history"])),
            ("    store answer identical to REST's", "yes" if store_body == cold_body else "NO"),
        ]
    MetricSeries.objects.filter(run_id__in=ids).delete()
    settings.PLINTH_METRIC_CACHE_LOOKBACK_SECONDS = 10 * 365 * 86400  # the seeded runs ended "just now"
    started = time.perf_counter()
    done = cache_finished_runs()
    background = time.perf_counter() - started
    figures["first_after_end"], first_body = call()
    extra += [
        (
            "(d) background task at run end (cache_finished_runs)",
            f"{background:.2f} s, {done['computed']} series, {'store' if store_uri else 'REST'}",
        ),
        ("(d) first compare after the runs finished", f"{figures['first_after_end']:.3f} s"),
        ("    identical to cold", "yes" if first_body == cold_body else "NO"),
    ]
    settings.PLINTH_MLFLOW_STORE_URI = ""
    return [
        ("(b) Plinth compare, cold (empty cache)", f"{cold:.2f} s"),
        ("    MLflow calls it made", ", ".join(f"{n} {k}" for k, n in sorted(cold_calls.items()))),
        (f"(b) Plinth compare, warm (median of {WARM_REPEATS})", f"{warm:.3f} s"),
        (
            "    MLflow calls per warm request",
            ", ".join(f"{n // WARM_REPEATS} {k}" for k, n in sorted(warm_calls.items())),
        ),
        ("    answer size", f"{len(warm_body) / 1e6:.1f} MB, {rows} cached series"),
        ("    warm answer identical to cold", "yes" if warm_body == cold_body else "NO"),
        *extra,
    ], figures


def bench_size(folder: Path, store: Path, size: tuple[int, int, int], *, with_ui: bool) -> Rows:
    runs, metrics, steps = size
    experiment_id, ids, seeding = seed(store, runs, metrics, steps)
    proc, url = start_server(store, folder)
    try:
        from django.conf import settings

        settings.MLFLOW_TRACKING_URI = url
        keys = [f"metric_{m}" for m in range(metrics)]
        rows: Rows = [
            ("points in MLflow", f"{runs * metrics * steps:,}"),
            ("seeding through the MLflow client (log_batch)", f"{seeding:.0f} s" if seeding else "reused"),
        ]
        ui = 0.0
        if with_ui:
            ui, ui_points = mlflow_ui_way(url, ids, keys, parallel=1)
            ui_parallel, _ = mlflow_ui_way(url, ids, keys, parallel=BROWSER_CONNECTIONS)
            calls = math.ceil(runs / UI_RUNS_PER_CALL) * metrics
            rows += [
                (
                    f"(a) MLflow UI way: bulk-interval, {UI_POINTS} points/run, {calls} calls in turn",
                    f"{ui:.2f} s ({ui_points:,} points)",
                ),
                (f"(a') the same calls, {BROWSER_CONNECTIONS} at a time", f"{ui_parallel:.2f} s"),
            ]
        plinth, figures = plinth_way([experiment_id], ids, keys, store_uri=f"sqlite:///{store}")
        rows += plinth
        cold, warm, direct = figures["cold"], figures["warm"], figures["store"]
        first, same = figures["first_after_end"], figures.get("store_warm", warm)
        rows.append(("warm: target ≤ 1 s", "met" if warm <= 1 else "MISSED"))
        rows.append(
            (
                "(d) vs warm of the same set-up: target ≤ 2x",
                f"{first / same:.2f}x ({'met' if first <= 2 * same else 'MISSED'})",
            )
        )
        if with_ui:
            rows += [
                ("warm vs (a): target ≥ 30x faster", f"{ui / warm:.0f}x ({'met' if ui / warm >= 30 else 'MISSED'})"),
                ("cold vs (a): target no slower", f"{ui / cold:.2f}x ({'met' if cold <= ui else 'MISSED'})"),
                (
                    "(c) store cold vs (a): target ≥ 5x faster",
                    f"{ui / direct:.1f}x ({'met' if direct * 5 <= ui else 'MISSED'})",
                ),
            ]
        return rows
    finally:
        stop_server(proc)


def run() -> list[tuple[str, list[tuple[str, str]]]]:
    """The benchmark tables: (title, rows)."""
    tables: list[tuple[str, Rows]] = []
    with tempfile.TemporaryDirectory(prefix="plinth-bench-runs-") as tmp:
        folder = Path(tmp)
        stores = Path(os.environ.get("PLINTH_BENCH_STORE_DIR", "") or folder)
        stores.mkdir(parents=True, exist_ok=True)
        setup_portal(tmp, "http://127.0.0.1:9")  # each size gets its own server below
        sizes = [((RUNS, METRICS, STEPS), True)] + ([(LARGE, bool(LARGE_UI))] if LARGE[0] > 0 else [])
        for size, with_ui in sizes:
            store = stores / "mlflow-{}x{}x{}.sqlite".format(*size)
            rows = bench_size(folder, store, size, with_ui=with_ui)
            tables.append(("Compare {} runs x {} metrics x {} steps, max_points=1000".format(*size), rows))
    return tables


def main() -> None:
    from tests.bench import print_table

    for title, rows in run():
        print_table(title, rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
