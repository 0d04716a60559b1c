"""`make bench`: a 1,000-trial sweep on Kubernetes, one Job per trial vs one Indexed Job.

Both runs go through the real `kubernetes` client and the portal's client-side rate limiter
(PLINTH_KUBE_QPS) to kmock's Kubernetes emulator over HTTP, with the task code Celery runs;
MLflow and the broker are stubbed (this measures the portal and the API server traffic). One
Job per trial submits each trial from a pool of worker threads, as workers would; the
Indexed Job is one submit task. No real cluster is involved: the numbers are the portal's
side of the conversation (requests, and the time the rate limit makes them take).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.bench import setup, sweep_world

TRIALS = int(os.environ.get("PLINTH_BENCH_SWEEP_TRIALS", "1000"))
WORKERS = int(os.environ.get("PLINTH_BENCH_WORKERS", "8"))


def _run(indexed: bool, ada: Any, project: Any, template: Any, queued: list[Any]) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from apps.compute.k8s import KubeGateway, KubernetesBackend, RateLimiter
    from apps.launches import sweeps, tasks, workloads
    from apps.launches.models import Launch, Status
    from tests.compute.kmock_server import Emulator

    settings.PLINTH_KUBE_INDEXED_SWEEPS = indexed
    queued.clear()
    emulator = Emulator()
    limiter = RateLimiter(settings.PLINTH_KUBE_QPS)
    # kmock lists a thousand objects slowly on a busy machine: a generous read timeout, so
    # the emulator's own pace is not reported as an outage.
    gateway = KubeGateway(api_client=emulator.api_client(), limiter=limiter, timeout=120)
    backend = KubernetesBackend(gateway)
    tasks.get_backend = lambda name: backend  # type: ignore[assignment]
    workloads.get_backend = lambda name: backend  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        sweep = sweeps.create_sweep(
            ada,
            project,
            template,
            strategy="random",
            space={"lr": {"min": 1e-5, "max": 0.1, "log": True}},
            max_trials=TRIALS,
            # Every trial at once, so both ways submit the whole sweep now (one Job per
            # trial would otherwise start the rest only as earlier ones end).
            parallelism=TRIALS,
            seed=1,
        )
        sweeps.advance(sweep.pk)
        created = time.perf_counter() - started
        way = "one Indexed Job" if indexed else "one Job per trial"
        print(f"{way}: {TRIALS} trials created in {created:.1f} s; submitting", file=sys.stderr, flush=True)
        gateway.calls.clear()
        limiter.reset_stats()
        started = time.perf_counter()
        if indexed:
            [(task, args)] = [(t, a) for t, a in queued if t is tasks.submit_workload]
            results = [task(*args)]
        else:
            pks = [args[0] for task, args in queued if task is tasks.submit_launch]

            def submit(pk: int) -> str:
                try:
                    return str(tasks.submit_launch(pk))
                finally:
                    connection.close()

            with ThreadPoolExecutor(WORKERS) as pool:
                results = list(pool.map(submit, pks))
        submitted = time.perf_counter() - started
        submit_requests = sum(gateway.calls.values())
        jobs = len(gateway.list_jobs(project.namespace))
        pending = Launch.objects.filter(sweep=sweep, status=Status.PENDING).count()
        launches = list(Launch.objects.filter(sweep=sweep).select_related("project__team", "template"))
        # A fresh budget for the poll, so it does not pay for the submission's requests.
        polling = KubeGateway(
            api_client=emulator.api_client(), limiter=RateLimiter(settings.PLINTH_KUBE_QPS), timeout=120
        )
        started = time.perf_counter()
        KubernetesBackend(polling).poll(launches)
        polled = time.perf_counter() - started
        poll_requests = sum(polling.calls.values())
    finally:
        emulator.close()
    return {
        "created": created,
        "submitted": submitted,
        "submit_requests": submit_requests,
        "submit_tasks": len(results),
        "jobs": jobs,
        "pending": pending,
        "polled": polled,
        "poll_requests": poll_requests,
        "peak": limiter.stats.peak_per_second,
    }


def bench_one_job_vs_indexed() -> list[tuple[str, str, str]]:
    from django.conf import settings

    ada, project, template, queued = sweep_world()
    each = _run(False, ada, project, template, queued)
    indexed = _run(True, ada, project, template, queued)

    def row(name: str, key: str, fmt: str) -> tuple[str, str, str]:
        return name, fmt.format(each[key]), fmt.format(indexed[key])

    limit = f" (limit {settings.PLINTH_KUBE_QPS:g})"
    return [
        row("trial rows + MLflow runs created (MLflow stubbed)", "created", "{:.2f} s"),
        row("submit tasks run", "submit_tasks", "{}"),
        row("API requests to submit", "submit_requests", "{}"),
        row("wall time to submit every trial", "submitted", "{:.2f} s"),
        row("Jobs on the API server afterwards", "jobs", "{}"),
        row("trials `pending` afterwards", "pending", "{}"),
        row(f"one reconciler poll of the {TRIALS} trials", "polled", "{:.2f} s"),
        row("API requests for that poll", "poll_requests", "{}"),
        row("peak requests/s while submitting" + limit, "peak", "{}"),
    ]


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    header = ("measure", "one Job per trial", "one Indexed Job")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    print(f"\n{title}\n")
    for cells in (header, *rows):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |")
        if cells is header:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="plinth-bench-") as data_dir:
        setup(data_dir)
        print_table(
            f"Sweep of {TRIALS} trials on Kubernetes: one Job per trial ({WORKERS} worker threads) vs one "
            "Indexed Job; kmock's emulator over HTTP, the real client and rate limiter",
            bench_one_job_vs_indexed(),
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
