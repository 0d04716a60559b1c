"""Adaptive sweeps (bayes = Optuna's TPE, cmaes), their objective, and extending a sweep.

Most tests drive the sweep with the fake backend and the fake MLflow, finishing each trial
as the synthetic template (apps/launches/examples/quadratic.py) would: its loss curve is
logged to the trial's run, then the job succeeds. One test runs a real bayes sweep end to
end on the local backend against the real MLflow server."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from apps.accounts.models import Team, User
from apps.audit.models import AuditEvent
from apps.launches import optimizer, sweeps, tasks
from apps.launches.examples import quadratic
from apps.launches.models import TERMINAL, Launch, Status, Sweep, SweepStatus, Template
from apps.launches.optimizer import ObjectiveState
from apps.projects.models import ExperimentState, Project
from apps.projects.services import link_experiment
from apps.tracking.gateway import MlflowGateway
from tests.conftest import api_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template

pytestmark = pytest.mark.django_db

PARAMETERS = {
    "x": {"type": "float", "default": 0.0, "min": -5.0, "max": 5.0},
    "y": {"type": "float", "default": 0.0, "min": -5.0, "max": 5.0},
    "steps": {"type": "int", "default": 10, "min": 1, "max": 1000},
    "sleep_per_step": {"type": "float", "default": 0.0, "min": 0.0, "max": 5.0},
}
COMMAND = [
    "python",
    "apps/launches/examples/quadratic.py",
    "--x={x}",
    "--y={y}",
    "--steps={steps}",
    "--sleep_per_step={sleep_per_step}",
]
SPACE = {"x": {"min": -5.0, "max": 5.0}, "y": {"min": -5.0, "max": 5.0}}
NEAR = quadratic.OPTIMUM * 1.1  # "within 10 % of the optimum"


@pytest.fixture
def quad(team: Team) -> Template:
    return make_template(team, "quadratic", COMMAND, parameters=PARAMETERS, backends=["local"])


def body(**changes: Any) -> dict[str, Any]:
    sent: dict[str, Any] = {
        "project": "demo/demo",
        "template": "quadratic",
        "strategy": "bayes",
        "space": SPACE,
        "max_trials": 10,
        "parallelism": 2,
        "objective": {"metric": "loss", "direction": "minimize"},
        "seed": 7,
    }
    sent.update(changes)
    return {k: v for k, v in sent.items() if v is not None}


def start(user: User, capture: Any, **changes: Any) -> Sweep:
    with capture(execute=True):
        response = api_for(user).post("/api/v1/sweeps/", body(**changes), format="json")
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def trials_of(sweep: Sweep) -> list[Launch]:
    return list(Launch.objects.filter(sweep=sweep).order_by("trial"))


def finish_live(
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    capture: Any,
    log: Callable[[Launch], list[float]] | None = None,
) -> None:
    """Every live trial logs its curve (the quadratic's, unless `log` says otherwise) and
    succeeds; then one reconciler pass."""
    for pk in fake_backend.live_pks():
        launch = Launch.objects.get(pk=pk)
        p = launch.parameters
        values = log(launch) if log else quadratic.curve(p["x"], p["y"], p["steps"])
        for step, value in enumerate(values):
            fake_mlflow.log(launch.mlflow_run_id, "loss", value, step)
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


# --- the search itself ------------------------------------------------------------------------
def test_bayes_gets_within_10_percent_of_the_optimum_in_fewer_trials_than_random(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    budget = 40
    reached: dict[str, int | None] = {}
    best: dict[str, float] = {}
    for strategy in ("random", "bayes"):
        sweep = start(ada, django_capture_on_commit_callbacks, strategy=strategy, max_trials=budget, parallelism=1)
        trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
        assert len(trials) == budget and [t.trial for t in trials] == list(range(budget))
        losses = [quadratic.loss(t.parameters["x"], t.parameters["y"]) for t in trials]
        if strategy == "bayes":  # what the optimiser was told is what the template logged last
            assert [t.objective for t in trials] == pytest.approx(losses)
        reached[strategy] = next((i + 1 for i, v in enumerate(losses) if v <= NEAR), None)
        best[strategy] = min(losses)
    print(f"\ntrials to reach loss <= {NEAR:.2f} (optimum {quadratic.OPTIMUM}), budget {budget}, seed 7:")
    for strategy in ("random", "bayes"):
        print(f"  {strategy:>6}: {reached[strategy] or 'never'}   best loss {best[strategy]:.4f}")
    assert reached["bayes"] is not None, best
    assert reached["random"] is None or reached["bayes"] < reached["random"], reached


def test_an_adaptive_sweep_plans_one_trial_at_a_time_and_stops_at_max_trials(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=5, parallelism=2)
    assert sweep.metric == "loss" and sweep.direction == "min"  # the objective, mapped
    sweep.refresh_from_db()
    assert len(sweep.planned) == 2 and len(fake_backend.live_pks()) == 2  # only what runs is planned
    progress = api_for(ada).get(f"/api/v1/sweeps/{sweep.pk}/").json()["progress"]
    assert progress["planned"] == 5 and progress["started"] == 2
    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(trials) == 5 and sweep.status == SweepStatus.SUCCEEDED
    assert len(sweep.planned) == 5
    assert all(-5.0 <= t.parameters["x"] <= 5.0 for t in trials)
    assert all(t.objective_state == ObjectiveState.OK for t in trials)


def test_a_cmaes_sweep_runs_and_keeps_the_samplers_state_on_the_sweep(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, strategy="cmaes", max_trials=12, parallelism=1)
    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(trials) == 12
    # CMA-ES records which generation each trial belongs to: kept, so the rebuilt study is its own.
    assert any("cma:generation" in attrs for attrs in sweep.trial_attrs.values()), sweep.trial_attrs
    study = optimizer.study_for(sweep, trials)
    assert [t.number for t in study.trials] == list(range(12))


def test_a_trial_whose_objective_is_nan_counts_as_failed_for_the_optimiser_and_says_so(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=3, parallelism=2)
    first, second = trials_of(sweep)
    finish_live(
        fake_backend,
        fake_mlflow,
        django_capture_on_commit_callbacks,
        log=lambda t: [2.0, math.nan] if t.pk == first.pk else [3.0, math.inf] if t.pk == second.pk else [],
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Status.SUCCEEDED and first.objective is None
    assert first.objective_state == ObjectiveState.INVALID
    assert "loss ended at nan: counted as failed by the optimiser" in first.status_reason
    assert "loss ended at inf" in second.status_reason
    study = optimizer.study_for(Sweep.objects.get(pk=sweep.pk), [first, second])
    assert [t.state.name for t in study.trials[:2]] == ["FAIL", "FAIL"]
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.RUNNING  # logged, just not finite


def test_an_objective_the_template_never_logs_fails_the_sweep_after_the_first_trial_naming_it(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(
        ada,
        django_capture_on_commit_callbacks,
        objective={"metric": "val_loss", "direction": "minimize"},
        max_trials=6,
        parallelism=2,
    )
    first, second = trials_of(sweep)
    fake_mlflow.log(first.mlflow_run_id, "loss", 1.5, 0)  # it logs loss, not val_loss
    fake_backend.set_state(first.pk, "running")
    fake_backend.set_state(second.pk, "running")
    fake_backend.set_state(first.pk, "succeeded", exit_code=0)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.FAILED
    assert "'val_loss' is never logged" in sweep.status_reason and "it logs loss" in sweep.status_reason
    second.refresh_from_db()
    assert second.status in (Status.CANCELLING, Status.CANCELLED)  # the other trial is stopped
    assert fake_backend.cancels[second.pk] >= 1
    assert Launch.objects.filter(sweep=sweep).count() == 2  # and nothing more starts


def test_a_trial_whose_run_is_gone_from_mlflow_counts_as_failed_without_failing_the_sweep(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=6, parallelism=2)
    first, second = trials_of(sweep)
    fake_mlflow.runs.pop(first.mlflow_run_id)  # MLflow answers 404 for it: nothing can be read
    fake_backend.set_state(first.pk, "running")
    fake_backend.set_state(second.pk, "running")
    fake_backend.set_state(first.pk, "succeeded", exit_code=0)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    first.refresh_from_db()
    assert first.objective_state == ObjectiveState.MISSING and first.objective is None
    assert "could not be read" in first.status_reason
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.RUNNING, sweep.status_reason  # not "never logged"
    assert Launch.objects.filter(sweep=sweep).count() == 3  # the next trial was asked and started


# --- a worker killed between ask and launch -------------------------------------------------
class WorkerKilled(RuntimeError):
    """Stands for the worker process dying at that point."""


def test_a_worker_killed_after_the_ask_neither_duplicates_nor_loses_a_trial(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=4, parallelism=1)
    finish_live(fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    finish_live(fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(trials_of(sweep)) == 3

    # Killed after Optuna answered, before the plan entry committed: nothing is kept...
    real_ask, real_create_launch = sweeps._ask, sweeps.create_launch
    asked: list[dict[str, Any]] = []

    def ask_then_die(locked: Sweep, trials: list[Launch]) -> int:
        index = real_ask(locked, trials)
        asked.append(dict(locked.planned[index]))
        raise WorkerKilled

    monkeypatch.setattr(sweeps, "_ask", ask_then_die)
    with pytest.raises(WorkerKilled), django_capture_on_commit_callbacks(execute=True):
        finish_live(fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert len(asked) == 1 and len(Sweep.objects.get(pk=sweep.pk).planned) == 3

    # ...killed after the commit, before the launch row: the plan holds a trial no launch has.
    monkeypatch.setattr(sweeps, "_ask", real_ask)

    def no_launch(*args: Any, **kwargs: Any) -> Launch:
        raise WorkerKilled

    monkeypatch.setattr(sweeps, "create_launch", no_launch)
    with pytest.raises(WorkerKilled), django_capture_on_commit_callbacks(execute=True):
        sweeps.advance(sweep.pk)
    planned = Sweep.objects.get(pk=sweep.pk).planned
    assert len(planned) == 4
    assert planned[3] == asked[0]  # the same rows asked again: the same parameters

    # The restarted worker starts exactly that trial, once.
    monkeypatch.setattr(sweeps, "create_launch", real_create_launch)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sync_launches()
    trials = trials_of(sweep)
    assert [t.trial for t in trials] == [0, 1, 2, 3]
    assert {k: trials[3].parameters[k] for k in SPACE} == {k: asked[0][k] for k in SPACE}
    assert sum(fake_backend.submits.values()) == 4


# --- extend ---------------------------------------------------------------------------------------
def test_extend_continues_the_same_study_numbers_and_best_carry_on(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=4, parallelism=2)
    first = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    best_before = optimizer.study_for(sweep, first).best_value

    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 3}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "running" and response.json()["max_trials"] == 7
    assert AuditEvent.objects.filter(verb="sweep.extended", target_id=str(sweep.pk)).exists()

    again = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 3}, format="json")
    assert again.status_code == 409  # running again

    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    assert [t.trial for t in trials] == list(range(7))
    assert [t.pk for t in trials[:4]] == [t.pk for t in first]  # the old trials are the study's first four
    study = optimizer.study_for(sweep, trials)
    assert len(study.trials) == 7
    assert study.best_value <= best_before
    assert study.best_value == min(t.objective for t in trials if t.objective is not None)


def test_extending_a_grid_sweep_adds_only_combinations_not_run_yet(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(
        ada,
        django_capture_on_commit_callbacks,
        strategy="grid",
        space={"x": [0.0, 1.0], "y": [0.0, 1.0]},
        max_trials=2,
        parallelism=2,
    )
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        sweeps.extend_sweep(ada, sweep, 5)
    trials = run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    seen = [(t.parameters["x"], t.parameters["y"]) for t in trials]
    assert len(seen) == 4 and len(set(seen)) == 4  # the grid holds 4: only 2 were new
    with pytest.raises(sweeps.Conflict, match="nothing to add"):
        sweeps.extend_sweep(ada, sweep, 1)


@pytest.mark.parametrize(
    ("trials", "status"), [(0, 400), (-2, 400), ("many", 400), (True, 400), (1001, 400), (None, 400)]
)
def test_extend_refuses_a_bad_number_of_trials(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    trials: Any,
    status: int,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=1, parallelism=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": trials}, format="json")
    assert response.status_code == status, response.json()
    assert "trials" in response.json()
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.SUCCEEDED  # unchanged


def test_extend_is_a_409_that_changes_nothing_while_the_projects_experiment_is_deleted(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=1, parallelism=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    Project.objects.filter(pk=linked_project.pk).update(mlflow_state=ExperimentState.DELETED)
    response = api_for(ada).post(f"/api/v1/sweeps/{sweep.pk}/extend/", {"trials": 2}, format="json")
    assert response.status_code == 409, response.json()
    assert "deleted" in response.json()["detail"]
    after = Sweep.objects.get(pk=sweep.pk)
    assert (after.status, after.max_trials, len(after.planned)) == (SweepStatus.SUCCEEDED, 1, 1)


def test_extend_is_for_its_creator_or_a_lead_and_invisible_to_other_teams(
    ada: User,
    lin: User,
    vic: User,
    omar: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=1, parallelism=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    url = f"/api/v1/sweeps/{sweep.pk}/extend/"
    assert api_for(omar).post(url, {"trials": 1}, format="json").status_code == 404
    assert api_for(vic).post(url, {"trials": 1}, format="json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        assert api_for(lin).post(url, {"trials": 1}, format="json").status_code == 200


def test_the_sweep_page_extends_an_ended_sweep_and_redirects(
    ada: User,
    vic: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    client: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=1, parallelism=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    client.force_login(vic)
    assert "data-extend" not in client.get(reverse("launches:sweep-detail", args=[sweep.pk])).content.decode()
    client.force_login(ada)
    assert "data-extend" in client.get(reverse("launches:sweep-detail", args=[sweep.pk])).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("launches:sweep-extend", args=[sweep.pk]), {"trials": "2"})
    assert response.status_code == 302 and response["Location"] == reverse("launches:sweep-detail", args=[sweep.pk])
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.RUNNING and sweep.max_trials == 3
    refused = client.post(reverse("launches:sweep-extend", args=[sweep.pk]), {"trials": "2"})
    assert refused.status_code == 409  # running: the error page says why


def test_the_sweep_pages_extend_form_answers_400_to_any_text_that_is_not_a_number_of_trials(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    client: Any,
) -> None:
    sweep = start(ada, django_capture_on_commit_callbacks, max_trials=1, parallelism=1)
    run_to_end(sweep, fake_backend, fake_mlflow, django_capture_on_commit_callbacks)
    client.force_login(ada)
    # "²" passes str.isdigit but not int(); 5,000 digits are more than int() reads.
    for text in ["\u00b2", "9" * 5000, "", "abc", "-1", "1.5", "0", "1001"]:
        response = client.post(reverse("launches:sweep-extend", args=[sweep.pk]), {"trials": text})
        assert response.status_code == 400, text[:10]
    assert Sweep.objects.get(pk=sweep.pk).status == SweepStatus.SUCCEEDED  # unchanged


# --- bad input --------------------------------------------------------------------------------------
BAD = [
    ("unknown-strategy", {"strategy": "simulated-annealing"}, "strategy"),
    ("cmaes-without-a-range", {"strategy": "cmaes", "space": {"x": [0.0, 1.0], "y": [0.5]}}, "space"),
    ("bayes-without-a-metric", {"objective": None}, "metric"),
    ("objective-direction", {"objective": {"metric": "loss", "direction": "down"}}, "objective.direction"),
    ("objective-no-metric", {"objective": {"direction": "minimize"}}, "objective.metric"),
    ("objective-a-string", {"objective": "loss"}, "objective"),
    ("stopping-type", {"early_stopping": {"type": "patience", "min_steps": 3}}, "early_stopping.type"),
    ("stopping-min-steps-0", {"early_stopping": {"type": "median", "min_steps": 0}}, "early_stopping.min_steps"),
    ("stopping-min-steps-text", {"early_stopping": {"type": "median", "min_steps": "5"}}, "early_stopping.min_steps"),
    ("stopping-no-min-steps", {"early_stopping": {"type": "asha"}}, "early_stopping.min_steps"),
    ("stopping-unknown-key", {"early_stopping": {"type": "median", "min_steps": 2, "eta": 3}}, "early_stopping"),
    ("stopping-a-list", {"early_stopping": ["median"]}, "early_stopping"),
    ("stopping-type-a-list", {"early_stopping": {"type": ["median"], "min_steps": 2}}, "early_stopping.type"),
    (
        "hyperband-max-steps-with-text-min-steps",
        {"early_stopping": {"type": "hyperband", "min_steps": "2", "max_steps": 9}},
        "early_stopping.min_steps",
    ),
    (
        "hyperband-max-below-min",
        {"early_stopping": {"type": "hyperband", "min_steps": 20, "max_steps": 9}},
        "early_stopping.max_steps",
    ),
    (
        "asha-reduction-1",
        {"early_stopping": {"type": "asha", "min_steps": 2, "reduction_factor": 1}},
        "early_stopping.reduction_factor",
    ),
    (
        "stopping-without-metric",
        {"strategy": "random", "objective": None, "early_stopping": {"type": "median", "min_steps": 2}},
        "metric",
    ),
    ("grid-with-a-range", {"strategy": "grid"}, "space.x"),
    ("range-log-a-string", {"space": {"x": {"min": 0.5, "max": 5.0, "log": "no"}}}, "space.x"),
    ("range-unknown-key", {"space": {"x": {"min": -5.0, "max": 5.0, "step": 0.5}}}, "space.x"),
    ("metric-too-long", {"objective": {"metric": "m" * 121, "direction": "minimize"}}, "metric"),
]


@pytest.mark.parametrize(("changes", "field"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_adaptive_sweep_is_a_400_naming_the_field(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_mlflow: FakeMlflow,
    changes: dict[str, Any],
    field: str,
) -> None:
    response = api_for(ada).post("/api/v1/sweeps/", body(**changes), format="json")
    assert response.status_code == 400, response.json()
    assert response.json()[field], response.json()
    assert not Sweep.objects.exists() and not fake_mlflow.runs


def test_the_sweep_form_offers_the_adaptive_strategies_and_early_stopping(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    django_capture_on_commit_callbacks: Any,
    client: Any,
) -> None:
    client.force_login(ada)
    url = reverse("launches:sweep-create")
    page = client.get(f"{url}?template={quad.pk}").content.decode()
    assert 'value="bayes"' in page and 'value="cmaes"' in page and 'value="median"' in page
    form = {
        "template": quad.pk,
        "project": linked_project.pk,
        "strategy": "bayes",
        "space": '{"x": {"min": -5, "max": 5}, "y": {"min": -5, "max": 5}}',
        "max_trials": 6,
        "parallelism": 2,
        "metric": "loss",
        "direction": "min",
        "early_stopping": "median",
        "min_steps": 0,
    }
    assert client.post(url, form).status_code == 400  # min_steps below 1
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {**form, "min_steps": 3})
    assert response.status_code == 302, response.content.decode()[:2000]
    sweep = Sweep.objects.get()
    assert sweep.strategy == "bayes" and sweep.early_stopping == {"type": "median", "min_steps": 3}


# --- a real sweep ------------------------------------------------------------------------------------
@pytest.mark.mlflow
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_bayes_sweep_runs_on_the_local_backend_and_reads_its_objective_from_mlflow(
    ada: User,
    project: Project,
    quad: Template,
    data_dir: Path,
    eager_tasks: None,
    mlflow_up: str,
) -> None:
    import time

    linked = link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED
    # One round of three trials: each is a real process logging to the real MLflow server.
    response = api_for(ada).post("/api/v1/sweeps/", body(max_trials=3, parallelism=3), format="json")
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get(pk=response.json()["id"])
    deadline = time.monotonic() + 150
    while Sweep.objects.get(pk=sweep.pk).status == SweepStatus.RUNNING and time.monotonic() < deadline:
        tasks.sync_launches()
        time.sleep(0.3)
    sweep.refresh_from_db()
    trials = trials_of(sweep)
    assert sweep.status == SweepStatus.SUCCEEDED, [(t.status, t.status_reason) for t in trials]
    assert [t.trial for t in trials] == [0, 1, 2] and all(t.status in TERMINAL for t in trials)
    assert len({(t.parameters["x"], t.parameters["y"]) for t in trials}) == 3  # three different asks
    mlflow = MlflowGateway(mlflow_up)
    for trial in trials:
        expected = quadratic.loss(trial.parameters["x"], trial.parameters["y"])
        assert trial.objective == pytest.approx(expected)
        assert len(trial.objective_curve) == 10  # the template's 10 steps
        assert mlflow.get_run(trial.mlflow_run_id)["info"]["status"] == "FINISHED"
    print(f"\nreal bayes sweep: losses {[round(t.objective or 0, 3) for t in trials]}")
