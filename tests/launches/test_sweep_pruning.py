"""Early stopping: the reconciler reads each running trial's curve of the sweep's metric
from MLflow, asks the sweep's Optuna pruner, and stops a trial clearly worse than the
completed ones through the normal cancel path — status `pruned` with the pruner's reason,
its GPUs free at once, its MLflow run KILLED and tagged `plinth.pruned`. No trial is
pruned before `min_steps`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.launches import optimizer, pruning, sweeps, tasks
from apps.launches.examples import quadratic
from apps.launches.models import TERMINAL, Launch, Status, Sweep, SweepStatus, Template
from apps.launches.pruning import curve_from_points, refresh_curves
from apps.launches.services import PRUNED_TAG, gpus_in_use
from apps.projects.models import ExperimentState, Project
from apps.projects.services import link_experiment
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.conftest import api_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template
from tests.launches.test_sweep_optuna import COMMAND, PARAMETERS

pytestmark = pytest.mark.django_db

STEPS = 10
GOOD, BAD = [0.5, 0.9, 0.7], [4.0, -4.0]  # the third good trial beats the first two


@pytest.fixture
def quad(team: Team) -> Template:
    return make_template(
        team,
        "quadratic",
        COMMAND,
        parameters=PARAMETERS,
        backends=["local"],
        default_resources={"gpus": 1},
        max_resources={"gpus": 1},
    )


def start(user: User, capture: Any, **changes: Any) -> Sweep:
    body: dict[str, Any] = {
        "project": "demo/demo",
        "template": "quadratic",
        "strategy": "grid",
        "space": {"x": [*GOOD, *BAD]},
        "parameters": {"y": -0.3, "steps": STEPS},
        "max_trials": 10,
        "parallelism": 2,
        "resources": {"gpus": 1},
        "metric": "loss",
        "direction": "min",
        "early_stopping": {"type": "median", "min_steps": 3, "min_trials": 2},
    }
    body.update(changes)
    with capture(execute=True):
        response = api_for(user).post("/api/v1/sweeps/", body, format="json")
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def log_steps(fake_mlflow: FakeMlflow, launch: Launch, upto: int) -> None:
    """The trial's quadratic curve, steps already logged excluded, up to step `upto` (inclusive)."""
    done = len(fake_mlflow.runs[launch.mlflow_run_id].get("metrics", {}).get("loss", []))
    values = quadratic.curve(launch.parameters["x"], launch.parameters["y"], STEPS)
    for step in range(done, min(upto, STEPS - 1) + 1):
        fake_mlflow.log(launch.mlflow_run_id, "loss", values[step], step)


def sync(capture: Any) -> None:
    with capture(execute=True):
        tasks.sync_launches()


def by_x(sweep: Sweep, x: float) -> Launch:
    return next(t for t in Launch.objects.filter(sweep=sweep) if t.parameters["x"] == x)


def test_median_pruning_stops_a_clearly_worse_trial_early_and_frees_its_gpu(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    capture = django_capture_on_commit_callbacks
    fake_backend.gpus = 2  # the local host's GPUs; the project's quota is 2 as well
    sweep = start(ada, capture)
    # Two good trials run to their end (the median needs min_trials=2 completed ones).
    for launch in Launch.objects.filter(sweep=sweep):
        fake_backend.set_state(launch.pk, "running")
    sync(capture)
    for launch in Launch.objects.filter(sweep=sweep):
        log_steps(fake_mlflow, launch, STEPS)
        fake_backend.set_state(launch.pk, "succeeded", exit_code=0)
    sync(capture)
    good, bad = by_x(sweep, GOOD[2]), by_x(sweep, BAD[0])  # started as slots freed
    for launch in (good, bad):
        fake_backend.set_state(launch.pk, "running")
    sync(capture)

    # Before min_steps, however bad its curve, a trial runs on.
    log_steps(fake_mlflow, bad, 2)
    log_steps(fake_mlflow, good, 2)
    sync(capture)
    bad.refresh_from_db()
    assert bad.status == Status.RUNNING and bad.objective_curve.keys() == {"0", "1", "2"}
    assert gpus_in_use(linked_project) == 2

    # At step 4 it is far above the median of the completed trials: pruned, mid-way.
    log_steps(fake_mlflow, bad, 4)
    log_steps(fake_mlflow, good, 4)
    sync(capture)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.status == Status.PRUNED, (bad.status, bad.status_reason)
    assert bad.status_reason.startswith("median of completed trials at step 4 was "), bad.status_reason
    assert bad.status_reason.endswith(f"this trial {quadratic.curve(BAD[0], -0.3, STEPS)[4]:.4g}")
    assert fake_backend.cancels[bad.pk] == 1 and bad.pk not in fake_backend.live_pks()  # the job is gone
    assert good.status == Status.RUNNING  # a good trial at the same step runs on
    run = fake_mlflow.runs[bad.mlflow_run_id]
    assert run["status"] == "KILLED" and run["tags"][PRUNED_TAG] == bad.status_reason
    # Its GPU went straight to the next trial (-4.0), started in the same pass.
    nxt = by_x(sweep, BAD[1])
    assert nxt.status not in TERMINAL and gpus_in_use(linked_project) == 2

    # The optimiser sees the trial as pruned, with the steps it logged.
    study = optimizer.study_for(Sweep.objects.get(pk=sweep.pk), list(Launch.objects.filter(sweep=sweep)))
    assert study.trials[bad.trial or 0].state.name == "PRUNED"
    assert sorted(study.trials[bad.trial or 0].intermediate_values) == [0, 1, 2, 3, 4]

    # The rest: the good trial completes, the other bad one is pruned too; the sweep ends.
    fake_backend.set_state(nxt.pk, "running")
    sync(capture)
    log_steps(fake_mlflow, good, STEPS)
    fake_backend.set_state(good.pk, "succeeded", exit_code=0)
    nxt.refresh_from_db()
    log_steps(fake_mlflow, nxt, 5)
    sync(capture)
    sync(capture)
    statuses = {t.parameters["x"]: t.status for t in Launch.objects.filter(sweep=sweep)}
    assert statuses == {0.5: "succeeded", 0.9: "succeeded", 0.7: "succeeded", 4.0: "pruned", -4.0: "pruned"}
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.SUCCEEDED
    assert gpus_in_use(linked_project) == 0


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_asha_and_hyperband_prune_the_worst_trial_only_after_min_steps(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    kind: str,
) -> None:
    capture = django_capture_on_commit_callbacks
    fake_backend.gpus = 2
    sweep = start(
        ada,
        capture,
        space={"x": [0.7, 0.8, 0.6, 0.9, 4.5]},
        parallelism=1,
        resources={"gpus": 0},
        early_stopping={"type": kind, "min_steps": 2, "reduction_factor": 2},
    )
    pruned_at: dict[float, int] = {}
    for _ in range(12):
        live = [Launch.objects.get(pk=pk) for pk in fake_backend.live_pks()]
        if not live:
            break
        launch = live[0]
        fake_backend.set_state(launch.pk, "running")
        sync(capture)
        for step in range(STEPS):
            log_steps(fake_mlflow, launch, step)
            sync(capture)
            launch.refresh_from_db()
            if launch.status != Status.RUNNING:
                pruned_at[launch.parameters["x"]] = step
                break
        else:
            fake_backend.set_state(launch.pk, "succeeded", exit_code=0)
            sync(capture)
    trials = list(Launch.objects.filter(sweep=sweep))
    assert {t.parameters["x"]: t.status for t in trials if t.status == Status.PRUNED}.keys() >= {4.5}, pruned_at
    assert all(step >= 2 for step in pruned_at.values()), pruned_at  # never before min_steps
    assert by_x(sweep, 0.7).status == Status.SUCCEEDED  # the first trial always runs to its end
    assert kind.upper()[:4] in by_x(sweep, 4.5).status_reason.upper()


def test_a_trial_logging_nan_is_pruned_at_the_first_step_after_min_steps(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    capture = django_capture_on_commit_callbacks
    fake_backend.gpus = 2
    sweep = start(ada, capture, space={"x": [0.7]}, parallelism=1, resources={"gpus": 0})
    [launch] = Launch.objects.filter(sweep=sweep)
    fake_backend.set_state(launch.pk, "running")
    sync(capture)
    for step in range(4):
        fake_mlflow.log(launch.mlflow_run_id, "loss", float("nan"), step)
    sync(capture)
    launch.refresh_from_db()
    assert launch.status == Status.PRUNED and launch.status_reason == "loss was nan at step 3"


def test_with_mlflow_down_nothing_is_pruned_and_the_reconciler_goes_on(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capture = django_capture_on_commit_callbacks
    fake_backend.gpus = 2
    sweep = start(ada, capture, space={"x": [0.7, 4.0]}, parallelism=2, resources={"gpus": 0})
    launches = list(Launch.objects.filter(sweep=sweep))
    for launch in launches:
        fake_backend.set_state(launch.pk, "running")
        for step in range(5):
            fake_mlflow.log(launch.mlflow_run_id, "loss", float("nan"), step)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise MlflowUnavailable("MLflow is unreachable")

    monkeypatch.setattr(MlflowGateway, "get_history_bulk", down)
    sync(capture)  # no exception: the pass goes on
    assert all(t.status == Status.RUNNING for t in Launch.objects.filter(sweep=sweep))
    fake_backend.set_state(launches[0].pk, "succeeded", exit_code=0)
    sync(capture)
    assert Launch.objects.get(pk=launches[0].pk).status == Status.SUCCEEDED  # launches still advance


def test_the_stored_curve_keeps_the_latest_value_of_a_step_and_thins_out_long_curves() -> None:
    points = [{"step": 1, "timestamp": 5, "value": 2.0}, {"step": 1, "timestamp": 9, "value": 1.5}]
    curve, last, logged = curve_from_points(points)
    assert curve == {"1": 1.5} and last == 1.5 and logged
    long = [{"step": s, "timestamp": s, "value": float(s)} for s in range(5000)]
    curve, last, _ = curve_from_points(long)
    assert len(curve) <= 1000 and all(int(step) % 5 == 0 for step in curve) and last == 4999.0
    assert curve_from_points([]) == ({}, None, False)


# --- for real -----------------------------------------------------------------------------------
@pytest.mark.mlflow
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_pruned_trial_is_killed_and_its_mlflow_run_says_why(
    ada: User,
    team: Team,
    project: Project,
    data_dir: Path,
    eager_tasks: None,
    mlflow_up: str,
) -> None:
    make_template(team, "quadratic", COMMAND, parameters=PARAMETERS, backends=["local"])
    linked = link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED
    body = {
        "project": "demo/demo",
        "template": "quadratic",
        "strategy": "grid",
        "space": {"x": [0.7, 0.8, 4.5]},
        "parameters": {"y": -0.3, "steps": 40, "sleep_per_step": 0.15},
        "max_trials": 3,
        "parallelism": 2,
        "metric": "loss",
        "direction": "min",
        "early_stopping": {"type": "median", "min_steps": 5, "min_trials": 2},
    }
    response = api_for(ada).post("/api/v1/sweeps/", body, format="json")
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get(pk=response.json()["id"])
    deadline = time.monotonic() + 150
    while Sweep.objects.get(pk=sweep.pk).status == SweepStatus.RUNNING and time.monotonic() < deadline:
        tasks.sync_launches()
        time.sleep(0.3)
    trials = {t.parameters["x"]: t for t in Launch.objects.filter(sweep=sweep)}
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.SUCCEEDED, {
        x: (t.status, t.status_reason) for x, t in trials.items()
    }
    bad = trials[4.5]
    assert bad.status == Status.PRUNED, bad.status_reason
    assert bad.status_reason.startswith("median of completed trials at step ")
    assert trials[0.7].status == trials[0.8].status == Status.SUCCEEDED
    mlflow = MlflowGateway(mlflow_up)
    run = mlflow.get_run(bad.mlflow_run_id)
    assert run["info"]["status"] == "KILLED"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}[PRUNED_TAG] == bad.status_reason
    steps = [p["step"] for p in mlflow.get_metric_history(bad.mlflow_run_id, "loss")[0]]
    assert 5 <= max(steps) < 39, steps  # stopped after min_steps, before its last step
    # Its process group is gone.
    group = int((data_dir / "launches" / str(bad.pk) / "pid").read_text().split()[1])
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    assert gpus_in_use(project) == 0


def test_a_bulk_history_cut_short_at_mlflows_limit_reads_the_cut_runs_alone(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_backend.gpus = 2
    sweep = start(ada, django_capture_on_commit_callbacks)
    running = list(Launch.objects.filter(sweep=sweep).order_by("trial"))
    assert len(running) == 2
    for launch in running:
        log_steps(fake_mlflow, launch, 7)  # 8 points each
    limit = 10  # MLflow's answer holds at most this many points: the second run is cut at 2
    monkeypatch.setattr(pruning, "HISTORY_BULK_LIMIT", limit)
    whole_bulk = fake_mlflow.get_history_bulk
    monkeypatch.setattr(fake_mlflow, "get_history_bulk", lambda ids, key, **_: whole_bulk(ids, key, limit))
    refresh_curves(sweep, running)
    for launch in Launch.objects.filter(sweep=sweep):
        assert sorted(int(step) for step in launch.objective_curve) == list(range(8)), launch.objective_curve


def test_one_sweeps_optimiser_error_never_stops_the_reconcilers_pass_for_the_others(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_backend.gpus = 2
    broken = start(ada, django_capture_on_commit_callbacks, parallelism=1)
    healthy = start(ada, django_capture_on_commit_callbacks, parallelism=1)
    seen: dict[str, list[int]] = {"prune": [], "advance": []}
    real_prune, real_advance = pruning.prune_sweep, sweeps.advance

    def prune(sweep_pk: int) -> list[int]:
        seen["prune"].append(sweep_pk)
        if sweep_pk == broken.pk:
            raise ValueError("the optimiser broke")
        return real_prune(sweep_pk)

    def advance(sweep_pk: int) -> int:
        seen["advance"].append(sweep_pk)
        if sweep_pk == broken.pk:
            raise ValueError("the optimiser broke")
        return real_advance(sweep_pk)

    monkeypatch.setattr(pruning, "prune_sweep", prune)
    monkeypatch.setattr(sweeps, "advance", advance)
    counts = tasks.sync_launches()
    assert counts["pruned"] == 0
    assert sorted(seen["prune"]) == sorted(seen["advance"]) == sorted([broken.pk, healthy.pk])
