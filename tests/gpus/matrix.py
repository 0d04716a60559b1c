"""The GPU routes in the authorization matrix (tests/access/test_matrix.py imports MATRIX and
calls extend_world).

Who may: the fleet and the idle list are for everyone signed in, scoped (omar gets 200 and
none of demo's rows); a launch's GPU panel follows the launch (viewers read it); a
project's idle policy is read by the team and changed by leads; exemptions are granted and
ended by leads; usage reports (page, CSV, API) are for leads and platform admins, so omar,
who leads no team, gets 403 like the audit log; prices are set by platform admins."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.gpus.models import FindingStatus, Gpu, IdleFinding
from apps.gpus.store import floor_time, insert_samples
from tests.access.matrix_vocab import DEMO_PROJECT, NONE, Kwargs, Op, Route, World, route

LAUNCH: Kwargs = lambda w: {"pk": w.launch.pk}  # noqa: E731 - a table of small functions
POLICY = {"threshold_percent": "10", "window_minutes": "45", "notify": "on", "grace_minutes": "30"}

MATRIX: dict[str, Route] = {
    "gpus:index": route(NONE, Op("GET", "vic", outsider=200)),
    "gpus:idle": route(NONE, Op("GET", "vic", outsider=200)),
    "gpus:usage": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "gpus:usage-csv": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
    "gpus:prices": route(
        NONE, Op("POST", "root", ok=302, too_weak="lin", outsider=403, body={"product": "NVIDIA A100", "price": "2.5"})
    ),
    "gpus:policy": route(
        DEMO_PROJECT,
        Op("GET", "vic"),
        Op("POST", "lin", ok=302, too_weak="ada", body=POLICY),
    ),
    "gpus:launch-usage": route(LAUNCH, Op("GET", "vic")),
    "gpus:exempt": route(LAUNCH, Op("POST", "lin", ok=302, too_weak="ada", body={"reason": "profiling"})),
    "gpus:unexempt": route(LAUNCH, Op("POST", "lin", ok=302, too_weak="ada")),
    "api:gpu-list": route(NONE, Op("GET", "vic", outsider=200)),
    "api:gpu-usage": route(NONE, Op("GET", "lin", too_weak="ada", outsider=403)),
}


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet for the pages to show: ada's running launch holds an idle GPU (with a finding
    and an hour of samples), another GPU is free. world.extra["gpus"]: the two GPUs."""
    launch = world.launch
    project = launch.project
    held = Gpu.objects.create(
        node="gpu-node-1",
        index=0,
        product="NVIDIA A100",
        allocated=True,
        launch=launch,
        project=project,
        team=project.team,
        namespace=project.namespace,
        pod=f"plinth-{launch.pk}-abcde",
        utilization=1.0,
    )
    free = Gpu.objects.create(node="gpu-node-1", index=1, product="NVIDIA A100", utilization=0.0)
    now = floor_time(timezone.now(), 60)
    insert_samples(
        (held.pk, now - timedelta(minutes=m), 1.0, 900, 60.0, None, True, launch.pk, project.pk, project.team_id, "")
        for m in range(60)
    )
    IdleFinding.objects.create(
        gpu=held,
        launch=launch,
        project=project,
        team=project.team,
        status=FindingStatus.NOTIFIED,
        idle_since=now - timedelta(minutes=45),
        checked_at=now,
    )
    world.extra["gpus"] = [held, free]
