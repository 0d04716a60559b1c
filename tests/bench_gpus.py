"""GPU benchmarks: the fleet page and the usage API over 500 GPUs x 7 days of 1-minute
samples, and one sampler pass for 500 GPUs against a fake Prometheus over HTTP.

Run alone: `.venv/bin/python -m tests.bench_gpus` (a fresh SQLite database in a temporary
folder; PLINTH_BENCH_DATABASE_URL points it elsewhere, e.g. PostgreSQL). Knobs:
PLINTH_BENCH_GPUS (500), PLINTH_BENCH_DAYS (7), PLINTH_BENCH_REPEAT (5).

The history is seeded through the sampler's own bulk path (apps.gpus.store.insert_samples,
one prepared INSERT run per batch), then rolled up with the roll-up task's code; its
holders are launches of 1 to 24 hours with idle gaps, a fifth of them idle (< 5 %), a few
pods outside Plinth. Server time is the time Django takes to answer in-process (the test
client: middleware, view, queries, template), best and median of the repeats after a
first, cold request."""

from __future__ import annotations

import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from tests.bench import print_table, setup

GPUS = int(os.environ.get("PLINTH_BENCH_GPUS", "500"))
DAYS = int(os.environ.get("PLINTH_BENCH_DAYS", "7"))
REPEAT = int(os.environ.get("PLINTH_BENCH_REPEAT", "5"))
PER_NODE = 8
TEAMS = 10
PROJECTS_PER_TEAM = 3


def progress(message: str) -> None:
    print(f"[bench_gpus] {message}", file=sys.stderr, flush=True)


class Seeded:
    def __init__(self) -> None:
        self.rows = 0
        self.launches = 0
        self.seconds: dict[str, float] = {}
        self.root: Any = None
        self.lead: Any = None


def _periods(rng: random.Random, minutes: int) -> list[tuple[int, int, int]]:
    """(start, end, kind) per GPU over the history: kind 0 free, 1 busy launch, 2 idle launch,
    3 a pod outside Plinth."""
    periods = []
    t = -rng.randrange(0, 600)
    while t < minutes:
        held = rng.randrange(60, 24 * 60)
        kind = 3 if rng.random() < 0.05 else (2 if rng.random() < 0.2 else 1)
        periods.append((max(t, 0), min(t + held, minutes), kind))
        t += held
        gap = rng.randrange(10, 6 * 60)
        periods.append((max(t, 0), min(t + gap, minutes), 0))
        t += gap
    return [p for p in periods if p[1] > p[0]]


def seed(now: datetime) -> Seeded:
    from apps.accounts.models import Membership, Team, User
    from apps.gpus.models import Gpu
    from apps.gpus.store import MAX_HOURS_PER_ROLLUP, floor_time, insert_samples, roll_up
    from apps.launches.models import Launch, Status, Template
    from apps.projects.models import Project

    result = Seeded()
    started = time.perf_counter()
    result.root = User.objects.create_user("root", password="x", is_platform_admin=True)
    result.lead = User.objects.create_user("lin", password="x")
    members = [User.objects.create_user(f"user-{i:02d}", password="x") for i in range(TEAMS * 2)]
    projects = []
    for t in range(TEAMS):
        team = Team.objects.create(slug=f"team-{t:02d}", name=f"Team {t}", gpu_budget=GPUS)
        Membership.objects.create(team=team, user=result.lead, role="lead")
        for member in members[2 * t : 2 * t + 2]:
            Membership.objects.create(team=team, user=member, role="member")
        for p in range(PROJECTS_PER_TEAM):
            projects.append(
                Project.objects.create(
                    team=team,
                    slug=f"p{p}",
                    name=f"P{p}",
                    namespace=f"plinth-team-{t:02d}-p{p}",
                    gpu_quota=GPUS,
                    backend="kubernetes",
                    mlflow_experiment_name=f"team-{t:02d}/p{p}",
                )
            )
    template = Template.objects.create(
        slug="train", name="train", image="python:3.11", command=["python", "train.py"], backends=["kubernetes"]
    )
    end = floor_time(now, 60)
    minutes = DAYS * 24 * 60
    start = end - timedelta(minutes=minutes)
    rng = random.Random(7)
    models = ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3")
    Gpu.objects.bulk_create(
        Gpu(node=f"gpu-node-{n // PER_NODE:03d}", index=n % PER_NODE, product=models[n // PER_NODE % 2])
        for n in range(GPUS)
    )
    gpu_ids = list(Gpu.objects.order_by("pk").values_list("pk", flat=True))
    plans: list[list[tuple[int, int, int, tuple[Any, ...], float]]] = []
    launch_rows: list[Launch] = []
    for _ in range(GPUS):
        plan = []
        for begin, finish, kind in _periods(rng, minutes):
            project = projects[rng.randrange(len(projects))]
            holder: tuple[Any, ...] = (False, None, None, None, "")
            base = 0.0
            if kind in (1, 2):
                launch = Launch(
                    project=project,
                    template=template,
                    created_by=members[rng.randrange(len(members))],
                    status=Status.RUNNING if finish == minutes else Status.SUCCEEDED,
                    backend="kubernetes",
                    resources={"gpus": 1},
                    gpus=1,
                    created_at=start + timedelta(minutes=begin),
                    started_at=start + timedelta(minutes=begin),
                    finished_at=None if finish == minutes else start + timedelta(minutes=finish),
                )
                launch_rows.append(launch)
                holder = (True, launch, project.pk, project.team_id, project.namespace)
                base = rng.uniform(40, 95) if kind == 1 else rng.uniform(0, 3)
            elif kind == 3:
                holder = (True, None, None, None, "research")
                base = rng.uniform(0, 60)
            plan.append((begin, finish, kind, holder, base))
        plans.append(plan)
    Launch.objects.bulk_create(launch_rows, batch_size=2000)
    result.launches = len(launch_rows)
    result.seconds["people, projects, GPUs, launches"] = time.perf_counter() - started
    progress(f"{len(launch_rows)} launches; inserting {GPUS * minutes:,} samples")

    def rows() -> Iterator[tuple[Any, ...]]:
        cursors = [0] * GPUS
        for minute in range(minutes):
            at = start + timedelta(minutes=minute + 1)
            wave = 4 * math.sin(minute / 37)
            for g in range(GPUS):
                plan = plans[g]
                while plan[cursors[g]][1] <= minute:
                    cursors[g] += 1
                _, _, kind, holder, base = plan[cursors[g]]
                util = min(100.0, max(0.0, base + wave)) if kind != 2 else base
                launch = holder[1]
                yield (
                    gpu_ids[g],
                    at,
                    round(util, 1),
                    int(util * 700) if holder[0] else 0,
                    60.0 + util * 3,
                    None,
                    holder[0],
                    launch.pk if launch is not None else None,
                    holder[2],
                    holder[3],
                    holder[4],
                )

    started = time.perf_counter()
    result.rows = insert_samples(rows())
    result.seconds[f"{result.rows:,} samples (insert_samples)"] = time.perf_counter() - started
    progress(f"samples in {time.perf_counter() - started:.0f} s; rolling up")
    # The current holders, as the last sampler pass would have left them.
    started = time.perf_counter()
    for g, gpu_id in enumerate(gpu_ids):
        _, _, kind, holder, base = plans[g][-1]
        launch = holder[1]
        Gpu.objects.filter(pk=gpu_id).update(
            allocated=holder[0],
            launch=launch,
            project_id=holder[2],
            team_id=holder[3],
            namespace=holder[4],
            utilization=base,
            memory_used_mib=int(base * 700),
            sampled_at=end,
        )
    rolled = {"hours": 0}
    while True:  # the task catches up MAX_HOURS_PER_ROLLUP hours a run (and re-rolls the last one)
        step = roll_up(now=now)
        rolled["hours"] += step["hours"]
        if step["hours"] < MAX_HOURS_PER_ROLLUP:
            break
    result.seconds[f"roll-up of {rolled['hours']} hours"] = time.perf_counter() - started
    return result


def _timed(client: Any, url: str) -> tuple[float, float, float, int]:
    """(cold, best, median) milliseconds and the status of the last answer."""
    timings = []
    status = 0
    for _ in range(REPEAT + 1):
        began = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - began) * 1000)
        status = response.status_code
    warm = timings[1:]
    return timings[0], min(warm), statistics.median(warm), status


def bench_pages(seeded: Seeded) -> list[tuple[str, str]]:
    from django.test import Client
    from rest_framework.test import APIClient

    from apps.gpus.models import GpuHourly, GpuSample

    rows: list[tuple[str, str]] = [
        ("raw samples / hourly roll-up rows", f"{GpuSample.objects.count():,} / {GpuHourly.objects.count():,}")
    ]
    page = Client()
    page.force_login(seeded.root)
    lead_page = Client()
    lead_page.force_login(seeded.lead)
    api = APIClient()
    api.force_authenticate(seeded.root)
    week = (datetime.now().astimezone() - timedelta(days=DAYS)).date().isoformat()
    for label, client, url in (
        ("fleet page /gpus/ (platform admin, 500 GPUs, 24 h heatmap)", page, "/gpus/"),
        ("usage API, 7 days, per project", api, f"/api/v1/gpus/usage/?group_by=project&start={week}"),
        ("usage API, 7 days, per team", api, f"/api/v1/gpus/usage/?group_by=team&start={week}"),
        ("usage page, 7 days, per project (lead of all teams)", lead_page, f"/gpus/usage/?start={week}"),
        ("fleet API /api/v1/gpus/ (first page)", api, "/api/v1/gpus/"),
        ("idle GPUs page", page, "/gpus/idle/"),
    ):
        cold, best, median, status = _timed(client, url)
        rows.append(
            (label, f"{median:.0f} ms median, {best:.0f} ms best, {cold:.0f} ms cold (HTTP {status}; target ≤ 500 ms)")
        )
    return rows


def bench_sampler() -> list[tuple[str, str]]:
    from apps.gpus.config import Sources
    from apps.gpus.models import SourceStatus
    from apps.gpus.sampler import run_pass
    from apps.gpus.sources.kubernetes import KubernetesSource
    from apps.gpus.sources.prometheus import PrometheusSource
    from apps.launches.models import Launch
    from tests.gpus.fakes import FakePrometheus, GpuFakeCluster, ServedGpu

    live = list(Launch.objects.filter(status="running").select_related("project")[: GPUS // 2])
    nodes: dict[str, list[ServedGpu]] = {}
    cluster = GpuFakeCluster(validate=False)
    for n in range(GPUS):
        node = f"gpu-node-{n // PER_NODE:03d}"
        if n % PER_NODE == 0:
            cluster.add_node(node, gpus=min(PER_NODE, GPUS - n), product="NVIDIA-A100-SXM4-80GB", memory_mib=81920)
        launch = live[n] if n < len(live) else None
        pod = f"plinth-{launch.pk}-abcde" if launch else ""
        if launch:
            cluster.add_gpu_pod(launch.project.namespace, pod, node, 1, {"plinth.dev/launch": str(launch.pk)})
        nodes.setdefault(node, []).append(
            ServedGpu(
                n % PER_NODE,
                f"GPU-{n:08d}",
                "NVIDIA A100-SXM4-80GB",
                50.0,
                30000,
                51920,
                300.0,
                0.5,
                launch.project.namespace if launch else "",
                pod,
            )
        )
    prometheus = FakePrometheus(nodes)
    try:
        sources = Sources(cluster=KubernetesSource(cluster), metrics=[PrometheusSource(prometheus.url)])
        timings = []
        fetch = []
        now = datetime.now().astimezone() + timedelta(minutes=1)
        for i in range(REPEAT + 1):
            result = run_pass(sources, now=now + timedelta(minutes=i))
            timings.append(result.seconds * 1000)
            fetch.append(SourceStatus.objects.get(name="prometheus").duration_ms)
        warm = timings[1:]
    finally:
        prometheus.close()
    return [
        (
            f"sampler pass, {result.gpus} GPUs ({result.allocated} allocated), fake Prometheus + fake cluster",
            f"{statistics.median(warm):.0f} ms median, {min(warm):.0f} ms best, {timings[0]:.0f} ms first",
        ),
        ("of which the Prometheus query and parse", f"{statistics.median(fetch[1:]):.0f} ms median"),
        ("samples written per pass", str(result.samples)),
    ]


def run() -> list[tuple[str, list[tuple[str, str]]]]:
    """The benchmark tables as (title, rows); needs Django set up (see main)."""
    now = datetime.now().astimezone()
    started = time.perf_counter()
    seeded = seed(now)
    total = time.perf_counter() - started
    seeding = [(what, f"{seconds:.1f} s") for what, seconds in seeded.seconds.items()]
    seeding.append(("seeding in all", f"{total:.1f} s ({seeded.launches:,} launches)"))
    return [
        (f"Seeding {GPUS} GPUs x {DAYS} days of 1-minute samples (SQLite unless PLINTH_BENCH_DATABASE_URL)", seeding),
        ("Server time of the GPU pages and API", bench_pages(seeded)),
        (f"Sampler pass for {GPUS} GPUs", bench_sampler()),
    ]


def main() -> None:
    os.environ.setdefault("PLINTH_GPU_NVML", "0")
    with tempfile.TemporaryDirectory(prefix="plinth-bench-gpus-") as data_dir:
        setup(data_dir)
        from django.conf import settings

        settings.PLINTH_GPU_NVML = False
        for title, rows in run():
            print_table(title, rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
