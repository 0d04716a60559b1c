"""A sweep's own environment, its MLflow parent run reopened by an extension, adaptive
sweeps that never repeat a trial, and the typed request side of the sweep API.

- Every trial runs in the environment resolved when the sweep was created
  (`Sweep.environment`), whatever default changes before its first trial starts.
- Extending an ended sweep sets its parent run back to RUNNING (a task, retried while
  MLflow is down; never a 500) and the run ends again with the extension.
- Bayes/CMA-ES over a finite space: `max_trials` is capped at the space's size (with the
  plan note grid and random give), a proposal equal to an earlier trial is asked again,
  and a sampler that only repeats stops the plan with the reason.
- The OpenAPI schema types `strategy` (an enum), `objective` and `early_stopping`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery.exceptions import Retry

from apps.accounts.models import Team, User
from apps.environments.models import Environment, EnvironmentState
from apps.launches import optimizer, sweeps, tasks
from apps.launches.models import Launch, Status, Sweep, SweepStatus, Template
from apps.projects.models import Project
from apps.tracking.gateway import MlflowGateway, MlflowUnavailable
from tests.conftest import api_for, client_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template

pytestmark = pytest.mark.django_db

PARAMETERS = {
    "x": {"type": "float", "default": 0.5, "min": 0.0, "max": 1.0},
    "y": {"type": "float", "default": 0.1, "min": 0.0, "max": 1.0},
    "n": {"type": "int", "default": 0, "min": 0, "max": 10},
}


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters=PARAMETERS)


def make_env(name: str) -> Environment:
    return Environment.objects.create(
        name=name, version=1, state=EnvironmentState.READY, image=f"registry.example/{name}@sha256:{'a' * 64}"
    )


def post_sweep(user: User, **changes: Any) -> Any:
    body: dict[str, Any] = {
        "project": "demo/demo",
        "template": "train",
        "strategy": "bayes",
        "space": {"x": [0.7, 0.8, 0.9], "y": [0.1]},
        "max_trials": 8,
        "parallelism": 1,
        "objective": {"metric": "loss", "direction": "minimize"},
        "seed": 11,
    }
    body.update(changes)
    return api_for(user).post("/api/v1/sweeps/", body, format="json")


def start(user: User, capture: Any, **changes: Any) -> Sweep:
    with capture(execute=True):
        response = post_sweep(user, **changes)
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def trials_of(sweep: Sweep) -> list[Launch]:
    return list(Launch.objects.filter(sweep=sweep).order_by("trial"))


def loss(launch: Launch) -> float:
    p = launch.parameters
    return float((p["x"] - 0.8) ** 2 + (p["y"] - 0.1) ** 2 + 0.01 * p["n"])


def finish_live(fake_backend: FakeBackend, fake_mlflow: FakeMlflow, capture: Any) -> None:
    """Every live trial logs its loss and succeeds; then one reconciler pass."""
    for pk in fake_backend.live_pks():
        launch = Launch.objects.get(pk=pk)
        fake_mlflow.log(launch.mlflow_run_id, "loss", loss(launch), 0)
        fake_backend.set_state(pk, "running")
        fake_backend.set_state(pk, "succeeded", exit_code=0)
    with capture(execute=True):
        tasks.sync_launches()


def run_to_end(
    sweep: Sweep,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    capture: Any,
    expect: str = SweepStatus.SUCCEEDED,
) -> list[Launch]:
    """Finish live trials pass after pass until the sweep ends; it must end `expect`."""
    for _ in range(sweep.max_trials + 5):
        if Sweep.objects.get(pk=sweep.pk).status != SweepStatus.RUNNING:
            break
        finish_live(fake_backend, fake_mlflow, capture)
    sweep.refresh_from_db()
    assert sweep.status == expect, (sweep.status, sweep.status_reason)
    return trials_of(sweep)


def space_values(trials: list[Launch], names: list[str]) -> list[str]:
    return [json.dumps({n: t.parameters[n] for n in names}, sort_keys=True) for t in trials]


# --- the sweep's environment --------------------------------------------------------------------
def test_trials_run_in_the_sweeps_environment_even_when_the_default_changes_before_the_first(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    chosen = make_env("chosen")
    Project.objects.filter(pk=linked_project.pk).update(environment=chosen)
    linked_project.refresh_from_db()
    # Created, but no trial started yet (the advance task is not run).
    sweep = sweeps.create_sweep(
        ada, linked_project, train, strategy="grid", space={"x": [0.1, 0.2, 0.3]}, max_trials=3, parallelism=1
    )
    assert sweep.environment_id == chosen.pk
    assert not Launch.objects.filter(sweep=sweep).exists()
    Project.objects.filter(pk=linked_project.pk).update(environment=make_env("later"))

    with django_capture_on_commit_callbacks(execute=True):
        sweeps.advance(sweep.pk)
    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(trials) == 3
    assert {t.environment_id for t in trials} == {chosen.pk}
    assert {fake_mlflow.runs[t.mlflow_run_id]["tags"]["plinth.environment"] for t in trials} == {"chosen:1"}

    shown = api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/").json()
    assert (shown["environment"], shown["environment_id"]) == ("chosen:1", chosen.pk)
    listed = api_for(ada).get("/api/v1/sweeps/").json()["results"]
    assert [(s["id"], s["environment"]) for s in listed] == [(sweep.pk, "chosen:1")]


def test_a_sweep_from_before_environments_were_kept_runs_in_its_first_trials(
    ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow
) -> None:
    sweep = sweeps.create_sweep(
        ada, linked_project, train, strategy="grid", space={"x": [0.1, 0.2]}, max_trials=2, parallelism=1
    )
    sweeps.advance(sweep.pk)
    first = trials_of(sweep)[0]
    Sweep.objects.filter(pk=sweep.pk).update(environment=None)  # an older row
    sweep.refresh_from_db()
    assert sweeps.trials_environment(sweep) == first.environment_id
    assert api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/").json()["environment"] == ""


# --- extending reopens the parent run ------------------------------------------------------------
def test_extending_an_ended_sweep_reopens_its_parent_run_until_the_extension_ends(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(
        ada,
        django_capture_on_commit_callbacks,
        strategy="grid",
        space={"x": [0.1, 0.2, 0.3, 0.4]},
        max_trials=2,
    )
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    parent = sweep.mlflow_parent_run_id
    assert fake_mlflow.runs[parent]["status"] == "FINISHED"

    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 2}, format="json")
    assert response.status_code == 200, response.json()
    assert fake_mlflow.runs[parent]["status"] == ""  # running again while the new trials run
    assert len(fake_backend.live_pks()) == 1

    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(trials) == 4 and sweep.status == SweepStatus.SUCCEEDED
    assert fake_mlflow.runs[parent]["status"] == "FINISHED"


def test_mlflow_down_when_extending_is_no_500_and_the_reopen_is_retried(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, strategy="grid", space={"x": [0.1, 0.2]}, max_trials=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    parent = sweep.mlflow_parent_run_id
    sent: list[int] = []
    monkeypatch.setattr(tasks.reopen_sweep_run, "delay", lambda pk: sent.append(pk))

    def down(gw: MlflowGateway, run_id: str) -> None:
        raise MlflowUnavailable("MLflow is unreachable.")

    monkeypatch.setattr(MlflowGateway, "reopen_run", down)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 1}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "running"
    assert sent == [sweep.pk]  # queued on commit

    # The worker's try while MLflow is down: Celery schedules a retry (autoretry on MlflowUnavailable).
    with pytest.raises(Retry, match="MLflow is unreachable"):
        tasks.reopen_sweep_run.apply(args=(sweep.pk,))
    assert fake_mlflow.runs[parent]["status"] == "FINISHED"

    monkeypatch.setattr(MlflowGateway, "reopen_run", lambda gw, run_id: fake_mlflow.reopen_run(run_id))
    assert tasks.reopen_sweep_run(sweep.pk) == "reopened"
    assert fake_mlflow.runs[parent]["status"] == ""


def test_a_reopen_that_comes_after_the_extension_ended_leaves_the_run_ended(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, strategy="grid", space={"x": [0.1, 0.2]}, max_trials=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    parent = sweep.mlflow_parent_run_id
    late: list[int] = []
    monkeypatch.setattr(tasks.reopen_sweep_run, "delay", lambda pk: late.append(pk))  # delayed (MLflow was down)
    with django_capture_on_commit_callbacks(execute=True):
        sweeps.extend_sweep(ada, sweep, 1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert fake_mlflow.runs[parent]["status"] == "FINISHED"

    assert tasks.reopen_sweep_run(late[0]) == "skipped"  # the sweep ended: nothing to reopen
    assert fake_mlflow.runs[parent]["status"] == "FINISHED"

    # The sweep ends while the reopen is on its way to MLflow: the run is ended again.
    reopen = MlflowGateway.reopen_run

    def reopen_while_it_ends(gw: MlflowGateway, run_id: str) -> None:
        reopen(gw, run_id)
        Sweep.objects.filter(pk=sweep.pk).update(status=SweepStatus.SUCCEEDED)

    Sweep.objects.filter(pk=sweep.pk).update(status=SweepStatus.RUNNING)
    monkeypatch.setattr(MlflowGateway, "reopen_run", reopen_while_it_ends)
    assert tasks.reopen_sweep_run(sweep.pk) == "reopened"
    assert fake_mlflow.runs[parent]["status"] == "FINISHED"


# --- adaptive sweeps never repeat a trial ---------------------------------------------------------
def test_a_bayes_sweep_over_a_finite_space_runs_each_combination_once_and_says_so(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks)
    assert sweep.max_trials == 3
    assert "max_trials is 8, but the search space holds only 3 distinct combinations" in sweep.status_reason
    shown = api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/").json()
    assert shown["max_trials"] == 3 and shown["progress"]["planned"] == 3

    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    seen = space_values(trials, ["x", "y"])
    assert len(trials) == 3 and len(set(seen)) == 3
    assert sweep.status == SweepStatus.SUCCEEDED
    assert all(t.status == Status.SUCCEEDED for t in trials)

    # Every combination has run: an extension has nothing to add.
    response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 2}, format="json")
    assert response.status_code == 409 and "nothing to add" in response.json()["detail"]


def test_extending_a_bayes_sweep_over_a_finite_space_adds_only_what_is_left(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, space={"x": [0.7, 0.8, 0.9], "y": [0.1, 0.2]}, max_trials=2)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        extended = sweeps.extend_sweep(ada, sweep, 10)
    assert extended.max_trials == 6
    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(trials) == 6 and len(set(space_values(trials, ["x", "y"]))) == 6


def test_a_sampler_that_only_repeats_stops_the_plan_with_the_reason(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # An int range of two values: not a list, so max_trials stays 5, but only 2 trials exist.
    sweep = start(ada, django_capture_on_commit_callbacks, space={"n": {"min": 0, "max": 1}}, max_trials=5)
    assert sweep.max_trials == 5
    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert sorted(t.parameters["n"] for t in trials) == [0, 1]
    assert sweep.status == SweepStatus.SUCCEEDED and sweep.max_trials == 2
    assert "stopped after 2 trials: the optimiser proposed only parameters earlier trials already ran" in (
        sweep.status_reason
    )


def test_asking_again_past_a_repeat_is_deterministic(ada: User, linked_project: Project, train: Template) -> None:
    """The same rows give the same new trial, repeats skipped alike: a worker killed after
    the ask asks the very same parameters on its next pass."""
    sweep = Sweep.objects.create(
        project=linked_project,
        template=train,
        created_by=ada,
        strategy="bayes",
        space={"n": {"min": 0, "max": 2, "log": False, "int": True}},
        planned=[{"n": 0}, {"n": 1}],
        max_trials=3,
        parallelism=1,
        metric="loss",
        direction="min",
        seed=5,
    )
    first, _ = optimizer.ask(sweep, [])
    again, _ = optimizer.ask(sweep, [])
    assert first == again == {"n": 2}

    sweep.planned = [{"n": 0}, {"n": 1}, {"n": 2}]
    with pytest.raises(optimizer.NothingNew, match="proposed only parameters earlier trials already ran"):
        optimizer.ask(sweep, [])


# --- the request side of the API ------------------------------------------------------------------
def test_the_schema_types_strategy_objective_and_early_stopping() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    request = components["SweepCreateRequest"]["properties"]

    strategy = request["strategy"]
    ref = strategy["allOf"][0]["$ref"] if "allOf" in strategy else strategy.get("$ref")
    enum = components[ref.rsplit("/", 1)[-1]]["enum"] if ref else strategy["enum"]
    assert enum == ["grid", "random", "bayes", "cmaes"]

    objective = request["objective"]
    assert objective["type"] == "object"
    assert objective["properties"]["metric"]["type"] == "string"
    assert objective["properties"]["direction"]["enum"] == ["maximize", "minimize"]

    stopping = request["early_stopping"]
    assert stopping["type"] == "object"
    assert stopping["properties"]["type"]["enum"] == ["median", "asha", "hyperband"]
    assert set(stopping["properties"]) == {"type", "min_steps", "min_trials", "reduction_factor", "max_steps"}
    assert all(stopping["properties"][k]["type"] == "integer" for k in set(stopping["properties"]) - {"type"})
    assert stopping["required"] == ["type", "min_steps"]

    sweep = components["Sweep"]["properties"]
    assert sweep["environment"]["type"] == "string" and sweep["environment_id"]["type"] == "integer"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"strategy": "annealing"}, "strategy", "Choose grid, random, bayes, cmaes."),
        ({"objective": {"metric": "loss", "direction": "down"}}, "objective.direction", "Choose minimize or maximize."),
        ({"objective": "loss"}, "objective", 'An object: {"metric": "loss", "direction": "minimize"}.'),
        ({"early_stopping": {"type": "patience", "min_steps": 2}}, "early_stopping.type", "Choose median, asha"),
        ({"early_stopping": {"type": "median", "min_steps": 0}}, "early_stopping.min_steps", "A whole number"),
        ({"early_stopping": {"type": "asha", "min_steps": 2, "min_trials": 3}}, "early_stopping", "takes no"),
    ],
)
def test_bad_typed_fields_are_a_400_naming_the_field(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_mlflow: FakeMlflow,
    changes: dict[str, Any],
    field: str,
    message: str,
) -> None:
    response = post_sweep(ada, **changes)
    assert response.status_code == 400, response.json()
    assert any(message in text for text in response.json()[field]), response.json()
    assert not Sweep.objects.exists()


# --- asking only with every ended trial's result known ---------------------------------------------
def test_a_bayes_sweep_asks_its_next_trial_only_once_the_ended_ones_result_is_read(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow down when a trial ends: its result is unread, so the sampler is not asked
    (it would see the trial as still running, a study no rebuild reproduces); the pass
    that reads it asks, and the next trial exists."""
    sweep = start(ada, django_capture_on_commit_callbacks, space={"x": {"min": 0.0, "max": 1.0}}, max_trials=3)
    [pk] = fake_backend.live_pks()
    first = Launch.objects.get(pk=pk)
    fake_mlflow.log(first.mlflow_run_id, "loss", loss(first), 0)
    history = MlflowGateway.get_metric_history

    def down(gw: MlflowGateway, *args: Any, **kwargs: Any) -> Any:
        raise MlflowUnavailable("MLflow is unreachable.")

    monkeypatch.setattr(MlflowGateway, "get_metric_history", down)
    fake_backend.set_state(pk, "running")
    fake_backend.set_state(pk, "succeeded", exit_code=0)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    first.refresh_from_db()
    assert first.status == Status.SUCCEEDED and first.objective_state == optimizer.ObjectiveState.UNREAD
    assert len(Sweep.objects.get(pk=sweep.pk).planned) == 1 and fake_backend.live_pks() == []

    monkeypatch.setattr(MlflowGateway, "get_metric_history", history)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    first.refresh_from_db()
    assert first.objective_state == optimizer.ObjectiveState.OK and first.objective == pytest.approx(loss(first))
    assert len(Sweep.objects.get(pk=sweep.pk).planned) == 2 and len(fake_backend.live_pks()) == 1


def test_a_cancelled_sweep_whose_trials_are_still_stopping_is_not_extended_yet(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, strategy="grid", space={"x": [0.1, 0.2]}, max_trials=2)
    for pk in fake_backend.live_pks():
        fake_backend.set_state(pk, "running")
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    # The cancel commits; the backend has not stopped the trial yet (its task not run).
    with django_capture_on_commit_callbacks(execute=False) as pending:
        assert api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/cancel/").status_code == 200
    assert Launch.objects.filter(sweep=sweep, status=Status.CANCELLING).exists()

    response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 1}, format="json")
    assert response.status_code == 409
    assert "still being stopped" in json.dumps(response.json())
    assert b"Extend sweep" not in client_for(ada).get(f"/launches/sweeps/{sweep.pk}/").content
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.CANCELLED

    with django_capture_on_commit_callbacks(execute=True):
        for callback in pending:
            callback()
        tasks.sync_launches()
    assert not Launch.objects.filter(sweep=sweep, status=Status.CANCELLING).exists()
    assert b"Extend sweep" in client_for(ada).get(f"/launches/sweeps/{sweep.pk}/").content
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 1}, format="json")
    assert response.status_code == 200, response.json()


def test_a_seed_asks_the_same_trials_whatever_order_the_database_keeps_the_spaces_keys() -> None:
    """PostgreSQL's jsonb stores a space's keys in its own order, SQLite as given: the
    optimiser's answer for a seed must not depend on it."""
    ranges = {"learning_rate": [0.003, 0.01, 0.00001], "alpha": {"min": 0.00001, "max": 0.001, "log": True}}

    def asked(space: dict[str, Any]) -> list[dict[str, Any]]:
        sweep = Sweep(strategy="bayes", space=space, metric="loss", direction="min", seed=3, planned=[])
        for _ in range(4):
            params, _attrs = optimizer.ask(sweep, [])
            sweep.planned = [*sweep.planned, params]
        return [json.loads(json.dumps(p, sort_keys=True)) for p in sweep.planned]

    assert asked(ranges) == asked(dict(reversed(list(ranges.items()))))
