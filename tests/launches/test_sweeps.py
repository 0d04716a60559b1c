"""Sweeps: every trial is planned up front (grid in order, random within its bounds and
reproducible), a bad search space is a 400 naming the parameter, trials run `parallelism`
at a time, and cancelling a sweep cancels its live trials. The trials' MLflow runs are
children of the sweep's run."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from apps.accounts.models import Team, User
from apps.compute.base import GpuDevice
from apps.launches import services, tasks
from apps.launches.models import LIVE, Launch, Status, Sweep, SweepStatus, Template
from apps.launches.sweeps import advance, plan_trials
from apps.projects.models import ExperimentState, Project
from apps.projects.services import link_experiment
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for
from tests.launches.conftest import FakeBackend, FakeMlflow, live_trials, make_template

pytestmark = pytest.mark.django_db

PARAMETERS = {
    "lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0},
    "epochs": {"type": "int", "default": 30, "min": 1, "max": 500},
    "batch": {"type": "choice", "choices": [16, 32, 64], "default": 32},
    "note": {"type": "str", "default": ""},
}
GRID_3x4: dict[str, list[Any]] = {"batch": [16, 32, 64], "lr": [0.001, 0.01, 0.1, 1.0]}


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters=PARAMETERS)


def sweep_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project": "demo/demo",
        "template": "train",
        "strategy": "grid",
        "space": GRID_3x4,
        "max_trials": 100,
        "parallelism": 3,
        "metric": "accuracy",
    }
    body.update(changes)
    return body


def start_sweep(user: User, capture: Any, **changes: Any) -> Sweep:
    with capture(execute=True):
        response = api_for(user).post("/api/v1/sweeps/", sweep_body(**changes), format="json")
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def trials_of(sweep: Sweep) -> list[Launch]:
    return list(Launch.objects.filter(sweep=sweep).order_by("id"))


# --- planning -------------------------------------------------------------------------------
def test_a_3_by_4_grid_plans_12_trials_in_order() -> None:
    planned = plan_trials("grid", GRID_3x4, 1000, seed=0)
    assert planned == [{"batch": b, "lr": lr} for b, lr in itertools.product(GRID_3x4["batch"], GRID_3x4["lr"])]
    assert len(planned) == 12
    assert plan_trials("grid", GRID_3x4, 5, seed=0) == planned[:5]  # max_trials cuts the grid short


def test_random_ranges_stay_in_bounds_keep_ints_whole_and_spread_log_scales() -> None:
    space = {
        "lr": {"min": 1e-5, "max": 1e-1, "log": True, "int": False},
        "epochs": {"min": 10, "max": 20, "log": False, "int": True},
        "batch": [16, 32, 64],
    }
    planned = plan_trials("random", space, 200, seed=1234)

    assert len(planned) == 200
    assert planned == plan_trials("random", space, 200, seed=1234)  # reproducible from the seed
    assert planned != plan_trials("random", space, 200, seed=4321)
    rates = [trial["lr"] for trial in planned]
    assert all(1e-5 <= lr <= 1e-1 for lr in rates)
    assert all(type(trial["epochs"]) is int and 10 <= trial["epochs"] <= 20 for trial in planned)
    assert {trial["epochs"] for trial in planned} >= {10, 20}  # the ends are reachable
    assert {trial["batch"] for trial in planned} == {16, 32, 64}
    # log-uniform: about half below the geometric midpoint (1e-3); uniform would put ~1% there
    below = sum(lr < math.sqrt(1e-5 * 1e-1) for lr in rates)
    assert 70 <= below <= 130, below
    decades = {math.floor(math.log10(lr)) for lr in rates}
    assert decades >= {-5, -4, -3, -2}


def test_a_random_sweep_created_through_the_api_plans_from_the_parameter_types(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = api_for(ada).post(
        "/api/v1/sweeps/",
        sweep_body(
            strategy="random",
            space={"lr": {"min": 0.0001, "max": 0.1, "log": True}, "epochs": {"min": 5, "max": 8}},
            max_trials=50,
            parallelism=2,
            seed=7,
        ),
        format="json",
    )
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get()
    assert sweep.max_trials == 50 and len(sweep.planned) == 50 and sweep.seed == 7
    assert all(0.0001 <= t["lr"] <= 0.1 and type(t["epochs"]) is int and 5 <= t["epochs"] <= 8 for t in sweep.planned)
    assert response.json()["progress"] == {"planned": 50, "started": 0, "done": 0, "running": 0}


def test_a_grid_sweep_records_its_plan_and_trims_max_trials_to_the_grid(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    response = api_for(ada).post("/api/v1/sweeps/", sweep_body(), format="json")
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get()
    assert sweep.max_trials == 12
    assert sweep.planned == plan_trials("grid", GRID_3x4, 100, 0)
    assert sweep.mlflow_parent_run_id in fake_mlflow.runs


# (id, body changes, the field the 400 names)
BAD_SWEEPS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-parameter", {"space": {"nope": [1, 2]}}, "space.nope"),
    ("empty-list", {"space": {"lr": []}}, "space.lr"),
    ("value-out-of-bounds", {"space": {"epochs": [10, 1000]}}, "space.epochs"),
    ("value-of-the-wrong-type", {"space": {"epochs": ["ten"]}}, "space.epochs"),
    ("not-a-choice", {"space": {"batch": [16, 17]}}, "space.batch"),
    ("range-in-a-grid", {"space": {"lr": {"min": 0.001, "max": 0.1}}}, "space.lr"),
    ("range-on-text", {"strategy": "random", "space": {"note": {"min": 1, "max": 2}}}, "space.note"),
    ("range-without-max", {"strategy": "random", "space": {"lr": {"min": 0.001}}}, "space.lr"),
    ("range-upside-down", {"strategy": "random", "space": {"lr": {"min": 0.1, "max": 0.001}}}, "space.lr"),
    ("range-out-of-bounds", {"strategy": "random", "space": {"lr": {"min": 0.1, "max": 5.0}}}, "space.lr"),
    ("log-from-zero", {"strategy": "random", "space": {"epochs": {"min": 0, "max": 5, "log": True}}}, "space.epochs"),
    ("range-of-a-choice", {"strategy": "random", "space": {"batch": {"min": 16, "max": 64}}}, "space.batch"),
    ("space-empty", {"space": {}}, "space"),
    ("space-a-list", {"space": [1, 2]}, "space"),
    ("unknown-strategy", {"strategy": "annealing"}, "strategy"),
    ("parallelism-zero", {"parallelism": 0}, "parallelism"),
    ("max-trials-text", {"max_trials": "many"}, "max_trials"),
    ("direction", {"direction": "up"}, "direction"),
    ("base-parameter", {"parameters": {"epochs": 0}}, "parameters.epochs"),
]


@pytest.mark.parametrize(("changes", "field"), [c[1:] for c in BAD_SWEEPS], ids=[c[0] for c in BAD_SWEEPS])
def test_an_invalid_sweep_is_a_400_naming_the_field_and_creates_nothing(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    changes: dict[str, Any],
    field: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_for(ada).post("/api/v1/sweeps/", sweep_body(**changes), format="json")
    assert response.status_code == 400, response.json()
    assert response.json()[field], response.json()
    assert not Sweep.objects.exists() and not Launch.objects.exists()
    assert not fake_mlflow.runs  # no parent run either
    assert not callbacks


def test_the_forms_own_example_under_grid_names_the_parameter_and_the_random_strategy(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    ranged = {"lr": {"min": 0.0001, "max": 0.1, "log": True}, "batch": [16, 32]}
    response = api_for(ada).post("/api/v1/sweeps/", sweep_body(space=ranged), format="json")
    assert response.status_code == 400, response.json()
    [message] = response.json()["space.lr"]
    assert message.startswith("lr:") and "Random" in message, message
    assert "space.batch" not in response.json()
    assert not Sweep.objects.exists()

    accepted = api_for(ada).post(
        "/api/v1/sweeps/", sweep_body(space=ranged, strategy="random", max_trials=2), format="json"
    )
    assert accepted.status_code == 201, accepted.json()


def test_a_viewer_cannot_start_a_sweep(vic: User, linked_project: Project, train: Template) -> None:
    assert api_for(vic).post("/api/v1/sweeps/", sweep_body(), format="json").status_code == 403
    assert not Sweep.objects.exists()


def test_more_gpus_at_once_than_the_quota_is_a_409(
    ada: User, team: Team, linked_project: Project, fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apps.compute.local.nvml_gpus", lambda: [GpuDevice(node="h", index=i) for i in range(4)])
    make_template(team, "gpu", ["python", "train.py"], parameters=PARAMETERS, max_resources={"gpus": 2})
    response = api_for(ada).post(
        "/api/v1/sweeps/", sweep_body(template="gpu", resources={"gpus": 1}, parallelism=3), format="json"
    )
    assert response.status_code == 409
    assert "quota of 2" in response.json()["detail"]
    assert not Sweep.objects.exists() and not fake_mlflow.runs


# --- running ---------------------------------------------------------------------------------
def test_a_sweep_runs_its_trials_parallelism_at_a_time_until_all_have_ended(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(ada, django_capture_on_commit_callbacks)
    assert sweep.max_trials == 12
    assert live_trials(sweep.pk) == 3
    assert len(fake_backend.live_pks()) == 3  # submitted, through the (eager) submit task

    most_live, rounds = 0, 0
    while Sweep.objects.get(pk=sweep.pk).status == SweepStatus.RUNNING:
        rounds += 1
        assert rounds <= 30, "the sweep never finished"
        live = fake_backend.live_pks()
        assert live, "nothing is running, yet the sweep is not finished"
        fake_backend.set_state(live[0], "running")
        fake_backend.set_state(live[0], "succeeded", exit_code=0)  # one ends at a time
        if len(live) > 1:
            fake_backend.set_state(live[1], "running")
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()
        most_live = max(most_live, live_trials(sweep.pk), fake_backend.live_count())
        assert live_trials(sweep.pk) <= 3

    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED
    assert sweep.finished_at is not None
    trials = trials_of(sweep)
    assert len(trials) == 12
    assert all(t.status == Status.SUCCEEDED for t in trials)
    assert [{k: t.parameters[k] for k in GRID_3x4} for t in trials] == sweep.planned
    assert all(t.parameters["epochs"] == 30 for t in trials)  # the template's defaults fill the rest
    assert most_live == 3 and fake_backend.max_live == 3
    assert sum(fake_backend.submits.values()) == 12
    assert fake_mlflow.runs[sweep.mlflow_parent_run_id]["status"] == "FINISHED"
    assert all(fake_mlflow.runs[t.mlflow_run_id]["status"] == "FINISHED" for t in trials)


def test_a_sweep_whose_trials_all_failed_ends_failed(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(ada, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2]}, parallelism=2)
    for trial in trials_of(sweep):
        fake_backend.set_state(trial.pk, "failed", "boom", exit_code=1)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.FAILED
    assert fake_mlflow.runs[sweep.mlflow_parent_run_id]["status"] == "FAILED"


def test_advance_is_safe_to_call_any_time(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(ada, django_capture_on_commit_callbacks)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            assert advance(sweep.pk) == 0  # all 3 slots are taken
    assert len(trials_of(sweep)) == 3


def test_trials_wait_for_the_gpu_quota_and_start_as_gpus_free_up(
    ada: User,
    team: Team,
    linked_project: Project,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    fake_backend.gpus = 4
    gpu = make_template(team, "gpu", ["python", "train.py"], parameters=PARAMETERS, max_resources={"gpus": 1})
    other = Launch.objects.create(
        project=linked_project, template=gpu, created_by=ada, backend="local", gpus=1, status=Status.RUNNING
    )
    sweep = start_sweep(
        ada,
        django_capture_on_commit_callbacks,
        template="gpu",
        resources={"gpus": 1},
        space={"lr": [0.1, 0.2, 0.3]},
        parallelism=2,
    )
    assert live_trials(sweep.pk) == 1  # quota 2, one GPU already held elsewhere
    Launch.objects.filter(pk=other.pk).update(status=Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        assert advance(sweep.pk) == 1
    assert live_trials(sweep.pk) == 2


def test_a_sweep_started_while_the_quota_is_full_starts_when_gpus_free_up(
    ada: User,
    team: Team,
    linked_project: Project,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    fake_backend.gpus = 4
    gpu = make_template(team, "gpu", ["python", "train.py"], parameters=PARAMETERS, max_resources={"gpus": 2})
    with django_capture_on_commit_callbacks(execute=True):
        other = services.create_launch(ada, linked_project, gpu, resources={"gpus": 2})
    sweep = start_sweep(
        ada,
        django_capture_on_commit_callbacks,
        template="gpu",
        resources={"gpus": 1},
        space={"lr": [0.1]},
        parallelism=1,
    )
    assert live_trials(sweep.pk) == 0  # waiting for the quota

    fake_backend.set_state(other.pk, "succeeded", exit_code=0)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()  # `other` ends; beat keeps running

    assert len(trials_of(sweep)) == 1, "the sweep never started its trial"


def test_a_gpu_sweep_on_a_local_host_without_gpus_is_refused(
    ada: User,
    team: Team,
    linked_project: Project,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    assert linked_project.backend == "local"
    fake_backend.gpus = 0
    make_template(team, "gpu", ["python", "train.py"], parameters=PARAMETERS, max_resources={"gpus": 1})
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(
            "/api/v1/sweeps/", sweep_body(template="gpu", resources={"gpus": 1}, parallelism=1), format="json"
        )
    assert response.status_code == 409, response.json()
    assert "1 GPUs requested, but the local backend's host has 0" in response.json()["detail"]
    assert not Sweep.objects.exists() and not Launch.objects.exists()
    assert fake_mlflow.runs == {}


def test_a_gpu_sweep_whose_host_lost_its_gpus_fails_rather_than_hanging(
    ada: User,
    team: Team,
    linked_project: Project,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    fake_backend.gpus = 1
    make_template(team, "gpu", ["python", "train.py"], parameters=PARAMETERS, max_resources={"gpus": 1})
    sweep = start_sweep(ada, django_capture_on_commit_callbacks, template="gpu", resources={"gpus": 1}, parallelism=1)
    [first] = trials_of(sweep)
    fake_backend.gpus = 0  # the host's GPU went away while the first trial ran
    fake_backend.set_state(first.pk, "failed", exit_code=1)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()

    sweep.refresh_from_db()
    assert [t.pk for t in trials_of(sweep)] == [first.pk] and live_trials(sweep.pk) == 0
    assert sweep.status == SweepStatus.FAILED, sweep.status_reason
    assert "stopped after 1 trials" in sweep.status_reason and "GPUs" in sweep.status_reason
    assert len(sweep.planned) == 1


def test_cancelling_a_sweep_cancels_its_live_trials_and_starts_no_more(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(ada, django_capture_on_commit_callbacks)
    first, second, third = trials_of(sweep)
    fake_backend.set_state(first.pk, "succeeded", exit_code=0)
    fake_backend.set_state(second.pk, "running")
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()  # `first` ends and a fourth trial starts
    fourth = trials_of(sweep)[3]
    Launch.objects.filter(pk=fourth.pk).update(status=Status.QUEUED)  # its submit message is still on its way
    fake_backend.forget(fourth.pk)
    assert live_trials(sweep.pk) == 3

    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/cancel/")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == SweepStatus.CANCELLED

    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.CANCELLED
    statuses = {t.pk: t.status for t in trials_of(sweep)}
    assert statuses == {
        first.pk: Status.SUCCEEDED,
        second.pk: Status.CANCELLED,
        third.pk: Status.CANCELLED,
        fourth.pk: Status.CANCELLED,
    }
    assert fake_backend.cancels[second.pk] >= 1 and fake_backend.cancels[third.pk] >= 1
    assert not fake_backend.live_pks()
    assert fake_mlflow.runs[sweep.mlflow_parent_run_id]["status"] == "KILLED"
    assert api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/cancel/").status_code == 409


def test_only_the_sweeps_creator_or_a_lead_may_cancel_it(
    ada: User,
    lin: User,
    vic: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start_sweep(lin, django_capture_on_commit_callbacks)
    assert api_for(vic).post(f"/api/v1/sweeps/{sweep.pk}/cancel/").status_code == 403
    assert api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/cancel/").status_code == 403
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.RUNNING
    assert all(t.status in LIVE for t in trials_of(sweep))


@pytest.mark.mlflow
def test_trial_runs_are_children_of_the_sweeps_run_in_the_real_mlflow(
    ada: User,
    project: Project,
    train: Template,
    fake_backend: FakeBackend,
    eager_tasks: None,
    mlflow_up: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    linked = link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED
    sweep = start_sweep(ada, django_capture_on_commit_callbacks, space={"lr": [0.1, 0.2, 0.3]}, parallelism=2)
    mlflow = MlflowGateway(mlflow_up)

    while Sweep.objects.get(pk=sweep.pk).status == SweepStatus.RUNNING:
        for pk in fake_backend.live_pks():
            fake_backend.set_state(pk, "succeeded", exit_code=0)
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()

    trials = trials_of(sweep)
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.SUCCEEDED
    assert len(trials) == 3 and all(t.status == Status.SUCCEEDED for t in trials)
    for trial in trials:
        run = mlflow.get_run(trial.mlflow_run_id)
        tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == sweep.mlflow_parent_run_id
        assert tags["plinth.sweep"] == str(sweep.pk)
        assert run["info"]["status"] == "FINISHED"
    children, _ = mlflow.search_runs(
        [linked.mlflow_experiment_id], f"tags.mlflow.parentRunId = '{sweep.mlflow_parent_run_id}'"
    )
    assert {run["info"]["run_id"] for run in children} == {t.mlflow_run_id for t in trials}
    parent = mlflow.get_run(sweep.mlflow_parent_run_id)
    assert parent["info"]["status"] == "FINISHED"
    assert {tag["key"]: tag["value"] for tag in parent["data"]["tags"]}["plinth.sweep.strategy"] == "grid"


def test_a_sweep_whose_template_was_retired_mid_way_ends_instead_of_hanging(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from portal.celery import app

    sweep = start_sweep(ada, django_capture_on_commit_callbacks)
    Template.objects.filter(pk=train.pk).update(is_active=False)  # a lead retires it
    app.conf.task_eager_propagates = False  # as on a worker: a failing task does not break the reconciler
    for pk in fake_backend.live_pks():
        fake_backend.set_state(pk, "succeeded", exit_code=0)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()

    sweep.refresh_from_db()
    assert live_trials(sweep.pk) == 0
    # The trials already run succeeded, so the sweep finished (not running, not failed), and
    # says why it stopped early.
    finished = trials_of(sweep)
    assert finished and all(t.status == Status.SUCCEEDED for t in finished)
    assert sweep.status == SweepStatus.SUCCEEDED, sweep.status_reason
    assert sweep.finished_at is not None
    assert f"stopped after {len(finished)} trials" in sweep.status_reason and "retired" in sweep.status_reason
    assert len(sweep.planned) == len(finished) < 12
