"""Early stopping says what it did and why: a sweep whose objective early stopping cannot
compare step by step says so on its page after its first trial, and a median-pruned trial's
reason quotes the very numbers Optuna's MedianPruner compared (the trial's best value so
far, the median of the completed trials at its step)."""

from __future__ import annotations

import html
import math
from typing import Any

import optuna
import pytest
from django.urls import reverse
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from apps.accounts.models import Team, User
from apps.launches import optimizer, tasks
from apps.launches.models import Launch, Status, Sweep, Template
from apps.launches.pruning import cannot_act_note, median_compared, prune_reason
from apps.projects.models import Project
from tests.conftest import api_for
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template
from tests.launches.test_sweep_optuna import COMMAND, PARAMETERS

pytestmark = pytest.mark.django_db


# --- "early stopping cannot act" --------------------------------------------------------------
def test_the_note_names_a_metric_logged_once_or_ending_before_min_steps() -> None:
    assert cannot_act_note("accuracy", {"0": 0.9}, 5) == (
        "Early stopping cannot act: 'accuracy' was logged at 1 step (min_steps 5), so no trial is stopped "
        "early. Choose a metric the template logs at every step."
    )
    assert cannot_act_note("loss", {"0": 2.0, "1": 1.5, "2": 1.2}, 5) == (
        "Early stopping cannot act: 'loss' was logged up to step 2 only (min_steps 5), so no trial is stopped "
        "early. Lower min_steps below 2, or have the trials run more steps."
    )
    assert cannot_act_note("loss", {str(step): 1.0 for step in range(10)}, 5) == ""
    assert cannot_act_note("loss", {"0": 1.0, "5": 0.5}, 5) == ""  # reaches min_steps
    assert cannot_act_note("loss", {}, 5) == ""  # nothing logged: another message says so


@pytest.fixture
def quad(team: Team) -> Template:
    return make_template(team, "quadratic", COMMAND, parameters=PARAMETERS, backends=["local"])


def start(user: User, capture: Any, metric: str) -> Sweep:
    body = {
        "project": "demo/demo",
        "template": "quadratic",
        "strategy": "grid",
        "space": {"x": [0.5, 0.7, 0.9]},
        "max_trials": 3,
        "parallelism": 1,
        "metric": metric,
        "direction": "max",
        "early_stopping": {"type": "median", "min_steps": 5},
    }
    with capture(execute=True):
        response = api_for(user).post("/api/v1/sweeps/", body, format="json")
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def finish_live_trial(fake_backend: FakeBackend, fake_mlflow: FakeMlflow, capture: Any, points: int, key: str) -> None:
    [pk] = fake_backend.live_pks()
    launch = Launch.objects.get(pk=pk)
    fake_backend.set_state(pk, "running")
    with capture(execute=True):
        tasks.sync_launches()
    for step in range(points):
        fake_mlflow.log(launch.mlflow_run_id, key, 0.5 + step / 100, step)
    fake_backend.set_state(pk, "succeeded", exit_code=0)
    with capture(execute=True):
        tasks.sync_launches()


def test_a_metric_logged_once_at_the_end_gets_a_note_on_the_sweep_page_after_the_first_trial(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
    client: Any,
) -> None:
    capture = django_capture_on_commit_callbacks
    sweep = start(ada, capture, "accuracy")
    finish_live_trial(fake_backend, fake_mlflow, capture, points=1, key="accuracy")
    sweep.refresh_from_db()
    note = "Early stopping cannot act: 'accuracy' was logged at 1 step (min_steps 5)"
    assert note in sweep.status_reason
    client.force_login(ada)
    page = client.get(reverse("launches:sweep-detail", kwargs={"pk": sweep.pk})).content.decode()
    assert note in html.unescape(page)

    # Said once: the next trial, just as short, adds nothing.
    finish_live_trial(fake_backend, fake_mlflow, capture, points=1, key="accuracy")
    sweep.refresh_from_db()
    assert sweep.status_reason.count("Early stopping cannot act") == 1
    assert Launch.objects.filter(sweep=sweep, status=Status.SUCCEEDED).count() == 2


def test_a_per_step_metric_gets_no_note(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    capture = django_capture_on_commit_callbacks
    sweep = start(ada, capture, "loss")
    finish_live_trial(fake_backend, fake_mlflow, capture, points=10, key="loss")
    sweep.refresh_from_db()
    assert Launch.objects.filter(sweep=sweep, status=Status.SUCCEEDED).count() == 1
    assert "Early stopping cannot act" not in sweep.status_reason


def test_a_curve_ending_before_min_steps_gets_the_note(
    ada: User,
    linked_project: Project,
    quad: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    capture = django_capture_on_commit_callbacks
    sweep = start(ada, capture, "loss")
    finish_live_trial(fake_backend, fake_mlflow, capture, points=3, key="loss")
    sweep.refresh_from_db()
    assert "Early stopping cannot act: 'loss' was logged up to step 2 only (min_steps 5)" in sweep.status_reason


# --- the median reason quotes what the pruner compared ----------------------------------------
def study_with(direction: str, completed: list[dict[int, float]], running: dict[int, float]) -> optuna.Study:
    study = optuna.create_study(direction="minimize" if direction == "min" else "maximize", pruner=None)
    dist: dict[str, BaseDistribution] = {"x": FloatDistribution(0.0, 1.0)}
    for values in completed:
        final = values[max(values)]
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=final if math.isfinite(final) else 0.0,
                params={"x": 0.5},
                distributions=dist,
                intermediate_values=values,
            )
        )
    study.add_trial(
        create_trial(state=TrialState.RUNNING, params={"x": 0.5}, distributions=dist, intermediate_values=running)
    )
    return study


def unsaved_sweep(direction: str) -> Sweep:
    return Sweep(metric="loss", direction=direction, early_stopping={"type": "median", "min_steps": 2})


@pytest.mark.parametrize(
    ("direction", "completed", "running", "median", "best"),
    [
        # Minimising: the trial's latest 2.0 is not what the pruner compares, its best (1.5) is.
        ("min", [{3: 1.0, 4: 1.0}, {3: 1.2, 4: 1.2}, {3: 1.3, 4: 1.3}], {3: 1.5, 4: 2.0}, 1.2, 1.5),
        # A NaN value of a completed trial is left out of the median, as Optuna leaves it out.
        ("min", [{4: 1.0}, {4: 1.4}, {4: 1.5}, {4: math.nan}], {3: 1.6, 4: 1.7}, 1.4, 1.6),
        # Maximising: the best is the highest value so far.
        ("max", [{4: 0.9}, {4: 0.8}, {4: 0.7}], {2: 0.6, 3: 0.65, 4: 0.5}, 0.8, 0.65),
    ],
)
def test_the_median_reason_quotes_the_values_the_median_pruner_compared(
    direction: str, completed: list[dict[int, float]], running: dict[int, float], median: float, best: float
) -> None:
    study = study_with(direction, completed, running)
    trial = study.get_trials(deepcopy=False)[-1]
    pruner = optimizer.pruner_for({"type": "median", "min_steps": 2})
    assert pruner.prune(study, trial)  # the pruner stops it: the reason explains why
    assert median_compared(study, trial) == (4, pytest.approx(best), pytest.approx(median))
    reason = prune_reason(unsaved_sweep(direction), study, trial)
    assert reason == f"median of completed trials at step 4 was {median:.4g}, best so far of this trial {best:.4g}"


def test_the_median_reason_without_a_completed_value_at_the_step_names_the_trials_best() -> None:
    study = study_with("min", [{1: 1.0}], {3: 1.5, 4: 2.0})
    trial = study.get_trials(deepcopy=False)[-1]
    assert prune_reason(unsaved_sweep("min"), study, trial) == "at step 4 the best value of this trial was 1.5"
