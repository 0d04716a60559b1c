"""`make bench`: benchmarks that print a table. Timings live here, never in tests.

Launch submission at scale: a 500-trial random sweep with parallelism 500 against kmock's
Kubernetes emulator over HTTP, through the real `kubernetes` client and the portal's
client-side rate limiter. MLflow and the broker are stubbed (this measures the portal and
the API server traffic, not MLflow); each trial is submitted by the same task code Celery
runs, from a pool of worker threads.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TRIALS = int(os.environ.get("PLINTH_BENCH_TRIALS", "500"))
WORKERS = int(os.environ.get("PLINTH_BENCH_WORKERS", "8"))


def setup(data_dir: str) -> None:
    os.environ["PLINTH_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = os.environ.get("PLINTH_BENCH_DATABASE_URL", f"sqlite:///{data_dir}/bench.sqlite3")
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("PLINTH_LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def sweep_world() -> tuple[Any, Any, Any, list[tuple[Any, tuple[Any, ...]]]]:
    """A member, a kubernetes project and a template; MLflow and the broker stubbed (the
    tasks the services queue are collected in the returned list instead)."""
    from apps.accounts.models import Membership, Team, User
    from apps.launches import services as launch_services
    from apps.launches import sweeps, workloads
    from apps.launches.services import create_template
    from apps.projects.models import Backend, ExperimentState, Project
    from apps.tracking.gateway import MlflowGateway

    MlflowGateway.create_run = lambda self, *a, **k: uuid.uuid4().hex  # type: ignore[method-assign]
    MlflowGateway.set_tag = lambda self, *a, **k: None  # type: ignore[method-assign]
    MlflowGateway.end_run = lambda self, *a, **k: None  # type: ignore[method-assign]
    queued: list[tuple[Any, tuple[Any, ...]]] = []
    for module in (launch_services, sweeps, workloads):
        module.enqueue_on_commit = lambda task, *args: queued.append((task, args))  # type: ignore[attr-defined]

    root = User.objects.create_user("root", password="x", is_platform_admin=True)
    ada = User.objects.create_user("ada", password="x")
    team = Team.objects.create(slug="bench", name="Bench", gpu_budget=0)
    Membership.objects.create(team=team, user=ada, role="member")
    project = Project.objects.create(
        team=team,
        slug="bench",
        name="Bench",
        backend=Backend.KUBERNETES,
        namespace="plinth-bench-bench",
        mlflow_experiment_name="bench/bench",
        mlflow_experiment_id="1",
        mlflow_state=ExperimentState.LINKED,
    )
    template = create_template(
        root,
        None,
        slug="train",
        name="train",
        image="python:3.11-slim",
        command=["python", "train.py"],
        parameters={"lr": {"type": "float", "default": 0.01, "min": 1e-6, "max": 1.0}},
        max_resources={"cpu": "2", "memory": "4Gi", "gpus": 0},
        backends=["kubernetes"],
    )
    return ada, project, template, queued


def bench_sweep_submission() -> list[tuple[str, str]]:
    from django.conf import settings
    from django.db import connection

    from apps.compute.k8s import KubeGateway, KubernetesBackend, RateLimiter
    from apps.launches import sweeps, tasks
    from apps.launches.models import Launch, Status
    from tests.compute.kmock_server import Emulator

    ada, project, template, queued = sweep_world()
    emulator = Emulator()
    limiter = RateLimiter(settings.PLINTH_KUBE_QPS)
    gateway = KubeGateway(api_client=emulator.api_client(), limiter=limiter)
    backend = KubernetesBackend(gateway)
    tasks.get_backend = lambda name: backend  # type: ignore[assignment]
    # One Job per trial here; the Indexed Job a grid/random sweep uses by default is
    # compared with it in tests/bench_sweeps_k8s.py.
    settings.PLINTH_KUBE_INDEXED_SWEEPS = False
    try:
        started = time.perf_counter()
        sweep = sweeps.create_sweep(
            ada,
            project,
            template,
            strategy="random",
            space={"lr": {"min": 1e-5, "max": 0.1, "log": True}},
            max_trials=TRIALS,
            parallelism=TRIALS,
            seed=1,
        )
        sweeps.advance(sweep.pk)
        planned = time.perf_counter() - started
        pks = [args[0] for task, args in queued if task is tasks.submit_launch]

        def submit(pk: int) -> str:
            try:
                return tasks.submit_launch(pk)
            finally:
                connection.close()

        limiter.reset_stats()
        started = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(submit, pks))
        submitted = time.perf_counter() - started
        stats = limiter.stats
        jobs = gateway.list_jobs(project.namespace)
        pending = Launch.objects.filter(sweep=sweep, status=Status.PENDING).count()
        launches = list(Launch.objects.filter(sweep=sweep).select_related("project__team", "template"))
        gateway.calls.clear()
        started = time.perf_counter()
        observations = backend.poll(launches)
        polled = time.perf_counter() - started
        poll_calls = sum(gateway.calls.values())
    finally:
        emulator.close()
    ok = results.count("submitted")
    return [
        ("trials planned and created (launch rows, MLflow stubbed)", f"{len(pks)} in {planned:.2f} s"),
        ("trials submitted to the API server", f"{ok} of {len(pks)}"),
        ("Jobs that exist in the emulator afterwards", str(len(jobs))),
        ("launches now `pending`", str(pending)),
        ("seconds to submit all", f"{submitted:.2f} s (target ≤ 30 s)"),
        ("submissions per second", f"{ok / submitted:.1f}"),
        ("peak requests/s sent to the API server", f"{stats.peak_per_second} (limit {settings.PLINTH_KUBE_QPS:g})"),
        ("time waiting in the rate limiter (all threads)", f"{stats.waited_seconds:.1f} s"),
        (
            f"one reconciler poll of {len(launches)} launches",
            f"{polled:.2f} s, {poll_calls} API requests, {len(observations)} observations",
        ),
    ]


def bench_rate_limiter_threads(qps: float = 25.0, threads: int = 5, each: int = 8) -> list[tuple[str, str]]:
    """The client-side rate limiter shared by threads, on the real clock: the tests check the
    rule on a fake clock; this shows how close a busy machine gets to it."""
    import threading

    from apps.compute.k8s import RateLimiter

    limiter = RateLimiter(qps)
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(each):
            limiter.acquire()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    total = threads * each
    ideal = (total - 1) / qps
    stats = limiter.stats
    return [
        ("requests granted", f"{stats.granted} of {total}"),
        ("peak requests in any second (the limiter's record)", f"{stats.peak_per_second} (limit {qps:g})"),
        ("wall time for all", f"{elapsed:.2f} s (no less than {ideal:.2f} s by the rule)"),
        ("achieved rate", f"{total / elapsed:.1f} requests/s"),
        ("time waiting in the limiter (all threads)", f"{stats.waited_seconds:.1f} s"),
    ]


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}\n")
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="plinth-bench-") as data_dir:
        setup(data_dir)
        print_table(
            f"Sweep submission: {TRIALS} trials, parallelism {TRIALS}, {WORKERS} worker threads, "
            "kmock Kubernetes emulator over HTTP",
            bench_sweep_submission(),
        )
        print_table(
            "Kubernetes client rate limiter: 5 threads, 8 requests each, at 25 requests/s, real clock",
            bench_rate_limiter_threads(),
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
