"""A sweep starts its trials without holding a lock while MLflow answers: each trial is
decided under a short lock on the sweep row and started by create_launch outside any
transaction. A trial that two passes pick at once is started once (the (sweep, trial)
unique constraint); the loser's MLflow run is deleted. MLflow being down (503) pauses the
sweep and keeps its plan; the next pass starts the rest."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from apps.accounts.models import Team, User
from apps.launches import services, tasks
from apps.launches.models import Launch, Status, Sweep, SweepStatus, Template
from apps.launches.sweeps import advance, cancel_sweep
from apps.projects.models import Project
from apps.tracking.gateway import MlflowUnavailable
from tests.conftest import api_for
from tests.launches.conftest import FakeBackend, FakeMlflow, live_trials, make_template

pytestmark = pytest.mark.django_db

PARAMETERS = {"lr": {"type": "float", "default": 0.01, "min": 0.00001, "max": 1.0}}
SPACE = {"lr": [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]}


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters=PARAMETERS)


def start_sweep(user: User, parallelism: int = 3) -> Sweep:
    body = {"project": "demo/demo", "template": "train", "strategy": "grid", "space": SPACE, "max_trials": 100}
    response = api_for(user).post("/api/v1/sweeps/", {**body, "parallelism": parallelism}, format="json")
    assert response.status_code == 201, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def trials_of(sweep: Sweep) -> list[Launch]:
    return list(Launch.objects.filter(sweep=sweep).order_by("trial"))


def run_ids_in_use(sweep: Sweep) -> set[str]:
    return {sweep.mlflow_parent_run_id, *Launch.objects.values_list("mlflow_run_id", flat=True)}


@pytest.mark.django_db(transaction=True)
def test_advance_never_talks_to_mlflow_inside_a_transaction(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Committed for real (no test transaction around it): the sweep's first trials start
    from the on-commit hook, the next ones from the reconciler."""
    calls: list[tuple[str, bool]] = []
    for method in ("create_run", "set_tag", "delete_run"):
        real = getattr(fake_mlflow, method)

        def watched(*args: Any, _real: Any = real, _name: str = method, **kwargs: Any) -> Any:
            calls.append((_name, connection.in_atomic_block))
            return _real(*args, **kwargs)

        monkeypatch.setattr(fake_mlflow, method, watched)

    sweep = start_sweep(ada)
    assert live_trials(sweep.pk) == 3
    for pk in fake_backend.live_pks()[:2]:
        fake_backend.set_state(pk, "succeeded", exit_code=0)
    tasks.sync_launches()

    assert len(trials_of(sweep)) == 5
    assert [name for name, _ in calls].count("create_run") == 1 + 5  # the sweep's run and its trials'
    assert [name for name, _ in calls].count("set_tag") == 2 * 5  # each trial's parent, then its launch id
    assert not [call for call in calls if call[1]], calls


def test_mlflow_down_mid_sweep_keeps_the_plan_and_a_later_pass_starts_the_rest(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    create_run = fake_mlflow.create_run
    set_tag = fake_mlflow.set_tag
    down = {"create_run": False, "set_tag": False}

    def flaky_create_run(*args: Any, **kwargs: Any) -> str:
        if down["create_run"]:
            raise MlflowUnavailable("MLflow at http://mlflow answered 503.")
        return create_run(*args, **kwargs)

    def flaky_set_tag(*args: Any, **kwargs: Any) -> None:
        if down["set_tag"]:
            raise MlflowUnavailable("MLflow at http://mlflow answered 503.")
        set_tag(*args, **kwargs)

    monkeypatch.setattr(fake_mlflow, "create_run", flaky_create_run)
    monkeypatch.setattr(fake_mlflow, "set_tag", flaky_set_tag)

    with django_capture_on_commit_callbacks(execute=True):
        sweep = start_sweep(ada)
    first_three = trials_of(sweep)
    assert len(first_three) == 3
    for trial in first_three:
        fake_backend.set_state(trial.pk, "succeeded", exit_code=0)

    down["create_run"] = True  # MLflow is down as the first trials end
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    down["create_run"], down["set_tag"] = False, True  # up again, but tagging the new run fails
    with django_capture_on_commit_callbacks(execute=True):
        assert advance(sweep.pk) == 0

    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.RUNNING
    assert len(sweep.planned) == len(SPACE["lr"]) and "stopped" not in sweep.status_reason
    assert trials_of(sweep) == first_three
    assert set(fake_mlflow.runs) == run_ids_in_use(sweep)  # the untagged run was deleted, not left behind
    assert len(fake_mlflow.deleted) == 1

    down["set_tag"] = False
    with django_capture_on_commit_callbacks(execute=True):
        assert advance(sweep.pk) == 3
    trials = trials_of(sweep)
    assert [t.trial for t in trials] == list(range(6))
    assert [t.parameters["lr"] for t in trials] == SPACE["lr"]
    for trial in trials[3:]:
        fake_backend.set_state(trial.pk, "succeeded", exit_code=0)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.SUCCEEDED, sweep.status_reason


def test_a_trial_two_passes_pick_at_once_starts_once_and_the_losers_run_is_deleted(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """While one pass waits for MLflow (holding no lock), another starts the same trial."""
    with django_capture_on_commit_callbacks(execute=True):
        sweep = start_sweep(ada, parallelism=2)
    first, second = trials_of(sweep)
    fake_backend.set_state(first.pk, "succeeded", exit_code=0)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.sync_launches()  # trial 3 starts
    fake_backend.set_state(second.pk, "succeeded", exit_code=0)
    Launch.objects.filter(pk=second.pk).update(status=Status.SUCCEEDED)  # ended; nobody has advanced yet

    create_run = fake_mlflow.create_run
    raced: list[bool] = []
    overtaken: list[int] = []

    def slow_create_run(*args: Any, **kwargs: Any) -> str:
        run_id = create_run(*args, **kwargs)
        if not raced:  # meanwhile, another worker's pass starts the same trial
            raced.append(True)
            overtaken.append(advance(sweep.pk))
        return run_id

    monkeypatch.setattr(fake_mlflow, "create_run", slow_create_run)
    with django_capture_on_commit_callbacks(execute=True):
        assert advance(sweep.pk) == 0  # its trial was taken; then no slot is free

    assert overtaken == [1]
    trials = trials_of(sweep)
    assert [t.trial for t in trials] == [0, 1, 2, 3]
    assert live_trials(sweep.pk) == 2
    assert len(fake_mlflow.deleted) == 1 and fake_mlflow.deleted[0] not in run_ids_in_use(sweep)
    assert set(fake_mlflow.runs) == run_ids_in_use(sweep)


def test_a_trial_already_started_is_refused_by_the_constraint_and_its_run_deleted(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        sweep = start_sweep(ada, parallelism=1)
    [first] = trials_of(sweep)
    assert first.trial == 0

    with pytest.raises(IntegrityError), transaction.atomic():
        Launch.objects.create(
            project=linked_project, template=train, created_by=ada, sweep=sweep, trial=0, backend="local"
        )
    with pytest.raises(services.TrialTaken, match="started meanwhile"):
        services.create_launch(ada, linked_project, train, sweep=sweep, trial=0)
    assert len(fake_mlflow.deleted) == 1
    assert set(fake_mlflow.runs) == run_ids_in_use(sweep)
    assert trials_of(sweep) == [first]
    # Launches outside sweeps have no trial number, and any number of them is fine.
    plain = [services.create_launch(ada, linked_project, train) for _ in range(2)]
    assert [launch.trial for launch in plain] == [None, None]


def test_a_trial_is_not_started_once_its_sweep_was_cancelled(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """advance decided the trial before the cancel; create_launch checks again under the lock."""
    with django_capture_on_commit_callbacks(execute=True):
        sweep = start_sweep(ada, parallelism=1)
    with django_capture_on_commit_callbacks(execute=True):
        cancel_sweep(ada, sweep)
    with pytest.raises(services.TrialTaken, match="has ended"):
        services.create_launch(ada, linked_project, train, sweep=sweep, trial=1)
    assert len(trials_of(sweep)) == 1
    assert set(fake_mlflow.runs) == run_ids_in_use(sweep)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres("needs real row locks (SELECT ... FOR UPDATE): run with DATABASE_URL=postgres://... as CI does")
def test_two_passes_at_once_both_wait_for_mlflow_and_start_the_trial_once(
    ada: User,
    linked_project: Project,
    train: Template,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both passes are inside MLflow at the same moment, which they could not be if
    deciding held the sweep's lock; the constraint then lets one of them start the trial."""
    sweep = start_sweep(ada, parallelism=1)
    [first] = trials_of(sweep)
    Launch.objects.filter(pk=first.pk).update(status=Status.SUCCEEDED)  # ended; nobody has advanced yet
    both_in_mlflow = threading.Barrier(2)
    create_run = fake_mlflow.create_run

    def create_run_together(*args: Any, **kwargs: Any) -> str:
        both_in_mlflow.wait(timeout=30)
        return create_run(*args, **kwargs)

    monkeypatch.setattr(fake_mlflow, "create_run", create_run_together)
    started: list[int] = []
    errors: list[BaseException] = []

    def one_pass() -> None:
        try:
            started.append(advance(sweep.pk))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    passes = [threading.Thread(target=one_pass) for _ in range(2)]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(timeout=60)

    assert not errors, errors
    assert sorted(started) == [0, 1]
    assert [t.trial for t in trials_of(sweep)] == [0, 1]
    assert len(fake_mlflow.deleted) == 1
    assert set(fake_mlflow.runs) == run_ids_in_use(sweep)


@pytest.mark.django_db(transaction=True)
def test_the_migration_numbers_existing_trials_in_the_order_they_started(
    ada: User, linked_project: Project, train: Template
) -> None:
    before, after = ("launches", "0003_submit_retry_and_sweep_label"), ("launches", "0004_launch_trial")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        old = executor.loader.project_state([before]).apps
        OldSweep, OldLaunch = old.get_model("launches", "Sweep"), old.get_model("launches", "Launch")
        common = {"project_id": linked_project.pk, "template_id": train.pk, "created_by_id": ada.pk}
        sweeps = [OldSweep.objects.create(strategy="grid", space={}, max_trials=3, parallelism=1, **common)]
        sweeps.append(OldSweep.objects.create(strategy="grid", space={}, max_trials=3, parallelism=1, **common))
        order = [sweeps[0], sweeps[1], sweeps[0], None, sweeps[1], sweeps[0]]
        pks = [OldLaunch.objects.create(sweep=s, backend="local", **common).pk for s in order]
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert after in MigrationExecutor(connection).loader.applied_migrations
    trial = dict(Launch.objects.filter(pk__in=pks).values_list("pk", "trial"))
    assert [trial[pk] for pk in pks] == [0, 0, 1, None, 1, 2]
