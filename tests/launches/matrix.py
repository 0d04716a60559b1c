"""The launches routes added with adaptive sweeps, in the authorization matrix
(tests/access/test_matrix.py): extending an ended sweep, by the API and from its page.

World extension: an ended (succeeded) sweep of ada's and one of bea's, each with one
finished trial; extending one plans nothing (the test records the task it would send)."""

from __future__ import annotations

import pytest

from apps.accounts.models import User
from apps.launches.models import Launch, Status, Sweep, SweepStatus
from tests.access.matrix_vocab import Kwargs, Op, Route, World, route

ENDED_SWEEP: Kwargs = lambda w: {"pk": w.extra["ended_sweep"].pk}  # noqa: E731
OTHERS_ENDED_SWEEP: Kwargs = lambda w: {"pk": w.extra["others_ended_sweep"].pk}  # noqa: E731

MATRIX: dict[str, Route] = {
    "api:sweep-extend": route(
        ENDED_SWEEP,
        Op("POST", "ada", too_weak="vic", body={"trials": 2}, note="own"),
        Op("POST", "lin", too_weak="ada", body={"trials": 2}, kwargs=OTHERS_ENDED_SWEEP, note="someone else's"),
    ),
    "launches:sweep-extend": route(
        ENDED_SWEEP,
        Op("POST", "ada", ok=302, too_weak="vic", body={"trials": "2"}, note="own"),
        Op(
            "POST",
            "lin",
            ok=302,
            too_weak="ada",
            body={"trials": "2"},
            kwargs=OTHERS_ENDED_SWEEP,
            note="someone else's",
        ),
    ),
}


def _ended_sweep(world: World, owner: User) -> Sweep:
    user = owner
    sweep = Sweep.objects.create(
        project=world.project,
        template=world.template,
        created_by=user,
        strategy="bayes",
        space={"alpha": {"min": 0.0001, "max": 0.01, "log": True}},
        planned=[{"alpha": 0.001}],
        max_trials=1,
        parallelism=1,
        metric="loss",
        direction="min",
        status=SweepStatus.SUCCEEDED,
    )
    Launch.objects.create(
        project=world.project,
        template=world.template,
        created_by=user,
        sweep=sweep,
        trial=0,
        status=Status.SUCCEEDED,
        backend="local",
        parameters={"alpha": 0.001},
        resources={"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": ""},
        mlflow_run_id=f"trial-of-{user.username}",
        mlflow_experiment_id="1",
    )
    return sweep


def extend_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.extra["ended_sweep"] = _ended_sweep(world, world.users["ada"])
    world.extra["others_ended_sweep"] = _ended_sweep(world, world.others_sweep.created_by)  # bea
