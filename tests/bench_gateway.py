"""`python -m tests.bench_gateway`: what the inference gateway costs on top of a model server.

Sets up a throwaway SQLite database with a deployment of a small scikit-learn model (a
logistic regression on iris, saved straight into the revision's model folder), starts its
real model server through the local serving backend (`mlflow models serve`), and the
portal under gunicorn exactly as `make run` does. Then, one after the other, the same
requests (a 3-row `dataframe_split`, over keep-alive connections) go straight to the model
server and through the gateway (token auth, routing, statistics), at concurrency 1 and 8.
Like any steady caller, the benchmark's token is checked against the database once per
gateway.CREDENTIAL_CACHE_SECONDS per process, its route once per CACHE_SECONDS.
Prints requests/s and p50/p99 latency for each, and the gateway's added p50 and its share
of the direct throughput at concurrency 8 (targets: <= 5 ms, >= 70 %).

PLINTH_BENCH_GATEWAY_REQUESTS sets the requests per measurement (default 400, after 50 to
warm up).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


REQUESTS = _env("PLINTH_BENCH_GATEWAY_REQUESTS", 400)
WARMUP = 50
CONCURRENCY = (1, 8)
START_DEADLINE = 300.0
Rows = list[tuple[str, str]]


def prepare(folder: Path) -> tuple[Any, str, bytes]:
    """The database, a deployment with one serving revision whose model is saved in place,
    and an API token of a member: (revision, token, request body)."""
    from tests.bench import setup

    setup(str(folder))
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from apps.accounts import services as account_services
    from apps.accounts.models import Membership, Team, User
    from apps.deployments.models import Deployment, Revision, RevisionStatus
    from apps.deployments.serving.local import revision_dir
    from apps.projects.models import Project

    ada = User.objects.create_user("ada", password="bench-gateway-password-1")
    team = Team.objects.create(slug="bench", name="Bench")
    Membership.objects.create(team=team, user=ada, role="member")
    project = Project.objects.create(team=team, slug="serve", name="Serve", namespace="bench-serve")
    deployment = Deployment.objects.create(
        project=project, name="iris", model_name="iris", backend="local", status="serving", created_by=ada
    )
    revision = Revision.objects.create(deployment=deployment, number=1, version=1, status=RevisionStatus.STARTING)
    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(features, target)
    mlflow.sklearn.save_model(model, str(revision_dir(revision) / "model"), input_example=features.head(3))
    _, token = account_services.create_api_token(ada, name="bench")
    body = json.dumps({"dataframe_split": json.loads(features.head(3).to_json(orient="split", index=False))})
    return revision, token, body.encode()


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def start_portal(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The portal under gunicorn, as `make run` starts its web part."""
    from apps.core.management.commands.embedded import web_argv
    from tests.conftest import _free_port

    port = _free_port()
    log = open(folder / "gunicorn.log", "wb")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(
        web_argv(Path(sys.executable).parent, port),
        cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited:\n" + (folder / "gunicorn.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    wait_until(up, "the portal")
    return proc, port


def load(
    port: int, path: str, body: bytes, headers: dict[str, str], concurrency: int, count: int
) -> tuple[float, list[float]]:
    """`count` POSTs spread over `concurrency` threads with a keep-alive connection each:
    (requests per second, latencies in ms). Any answer but 200 stops the run."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = count // concurrency
    errors: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(per_thread):
            started = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            mine.append((time.perf_counter() - started) * 1000.0)
            if response.status != 200:
                errors.append(f"{response.status}: {data[:300]!r}")
                break
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"a request failed: {errors[0]}")
    return len(latencies) / elapsed, latencies


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group `pgid`."""
    from apps.core.guard import group_members

    ticks = 0
    for pid in group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run() -> Rows:
    folder = Path(tempfile.mkdtemp(prefix="plinth-bench-gateway-"))
    revision, token, body = prepare(folder)
    from apps.deployments.serving.local import LocalServing, stop_all_model_servers

    backend = LocalServing()
    portal: subprocess.Popen[bytes] | None = None
    try:
        backend.start(revision)
        revision.refresh_from_db()
        wait_until(lambda: backend.probe(revision).state == "up", "the model server")
        type(revision).objects.filter(pk=revision.pk).update(status="serving", traffic=100)
        portal, portal_port = start_portal(folder)
        json_type = {"Content-Type": "application/json"}
        targets = {
            "direct": (int(revision.port), "/invocations", json_type),
            "gateway": (
                portal_port,
                "/serve/bench/serve/iris/invocations",
                {**json_type, "Authorization": f"Bearer {token}"},
            ),
        }
        results: dict[tuple[str, int], tuple[float, list[float]]] = {}
        cpu: dict[tuple[str, int], tuple[float, float]] = {}  # ms per request: portal, model server
        for concurrency in CONCURRENCY:
            for name, (port, path, headers) in targets.items():
                load(port, path, body, headers, concurrency, WARMUP)
                before = group_cpu(portal.pid), group_cpu(int(revision.pid))
                results[name, concurrency] = load(port, path, body, headers, concurrency, REQUESTS)
                after = group_cpu(portal.pid), group_cpu(int(revision.pid))
                count = len(results[name, concurrency][1])
                cpu[name, concurrency] = (
                    (after[0] - before[0]) * 1000.0 / count,
                    (after[1] - before[1]) * 1000.0 / count,
                )
    finally:
        if portal is not None:
            os.killpg(portal.pid, signal.SIGTERM)
            portal.wait(timeout=30)
        stop_all_model_servers()
    rows: Rows = []
    for (name, concurrency), (rate, latencies) in results.items():
        portal_cpu, model_cpu = cpu[name, concurrency]
        rows.append(
            (
                f"{name:8s} c={concurrency}",
                f"{rate:7.1f} req/s   p50 {statistics.median(latencies):6.2f} ms   p99 {pct(latencies, 0.99):6.2f} ms"
                f"   CPU/request: portal {portal_cpu:5.2f} ms, model server {model_cpu:5.2f} ms",
            )
        )
    for concurrency in CONCURRENCY:
        added = statistics.median(results["gateway", concurrency][1]) - statistics.median(
            results["direct", concurrency][1]
        )
        share = results["gateway", concurrency][0] / results["direct", concurrency][0]
        rows.append((f"gateway c={concurrency}", f"added p50 {added:+.2f} ms, {share:.0%} of the direct throughput"))
    return rows


def main() -> None:
    at_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = run()
    print(f"\nInference gateway vs the model server straight ({REQUESTS} requests per line, cpus={os.cpu_count()})")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"  load average at the start: {at_start}, at the end: {load_average}"
        " (latencies grow with it; CPU/request hardly does)"
    )
    print("  targets: added p50 <= 5 ms, >= 70 % of the direct throughput at c=8")


if __name__ == "__main__":
    main()
