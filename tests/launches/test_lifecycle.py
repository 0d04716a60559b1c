"""Crash safety and the launch state machine: every task is safe to run twice, the
reconciler repairs what a crash left behind, and what a backend observes moves a launch
only along the allowed transitions."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User
from apps.compute.base import Observation
from apps.compute.registry import get_backend
from apps.launches import services, tasks
from apps.launches.models import LIVE, TERMINAL, Launch, Status, Template
from apps.projects.models import Project
from tests.conftest import api_for, make_user
from tests.launches.conftest import FakeBackend, FakeMlflow, make_template

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(minutes=10)


@pytest.fixture
def train(team: Team) -> Template:
    return make_template(team, "train", ["python", "train.py"], parameters={"lr": {"type": "float", "default": 0.1}})


@pytest.fixture
def launch_of(ada: User, linked_project: Project, train: Template, fake_mlflow: FakeMlflow) -> Callable[..., Launch]:
    """A launch created by the service as ada (its submit message not sent: it is `queued`)."""

    def make(**kwargs: Any) -> Launch:
        return services.create_launch(ada, linked_project, train, **kwargs)

    return make


def age(launch: Launch, **fields: Any) -> None:
    """Pretend the row was last touched long ago (updated_at is auto_now: set it directly)."""
    Launch.objects.filter(pk=launch.pk).update(updated_at=timezone.now() - LONG_AGO, **fields)


def reload(launch: Launch) -> Launch:
    launch.refresh_from_db()
    return launch


# --- crash safety -------------------------------------------------------------------------
def test_a_submit_that_died_after_the_local_backend_started_the_job_does_not_start_it_twice(
    ada: User, team: Team, linked_project: Project, data_dir: Path, fake_mlflow: FakeMlflow
) -> None:
    script = "import os,time\nprint('started', os.getpid(), flush=True)\ntime.sleep(1.5)"
    template = make_template(team, "once", ["python", "-c", script], backends=["local"])
    launch = Launch.objects.create(
        project=linked_project,
        template=template,
        created_by=ada,
        backend="local",
        status=Status.SUBMITTING,
        submit_attempts=1,
    )
    get_backend("local").submit(launch)  # the backend accepted it; then the worker died
    age(launch)
    folder = data_dir / "launches" / str(launch.pk)
    first_pid = (folder / "pid").read_text()

    counts = tasks.sync_launches()

    assert counts["resubmitted"] == 1
    launch = reload(launch)
    assert launch.status in (Status.PENDING, Status.RUNNING, Status.SUCCEEDED)
    assert launch.submit_attempts == 2
    assert (folder / "pid").read_text() == first_pid  # the same process, not a second one
    assert [p.name for p in (data_dir / "launches").iterdir() if p.is_dir()] == [str(launch.pk)]
    deadline = time.monotonic() + 30
    while launch.status not in TERMINAL and time.monotonic() < deadline:
        tasks.sync_launches()
        launch = reload(launch)
        if launch.status not in TERMINAL:
            assert launch.status in (Status.PENDING, Status.RUNNING)
        time.sleep(0.1)
    assert launch.status == Status.SUCCEEDED, launch.status_reason
    assert launch.exit_code == 0
    assert (folder / "output.log").read_text().count("started") == 1  # the job ran exactly once


def test_a_submit_that_died_after_the_backend_accepted_the_job_ends_with_exactly_one_job(
    fake_backend: FakeBackend, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    Launch.objects.filter(pk=launch.pk).update(status=Status.SUBMITTING, submit_attempts=1)
    fake_backend.submit(reload(launch))
    fake_backend.set_state(launch.pk, "running")
    age(launch)

    tasks.sync_launches()
    tasks.sync_launches()

    assert len(fake_backend.jobs) == 1
    assert reload(launch).status == Status.RUNNING
    fake_backend.set_state(launch.pk, "succeeded", exit_code=0)
    tasks.sync_launches()
    assert reload(launch).status == Status.SUCCEEDED


def test_a_recent_submitting_launch_is_left_alone_by_the_reconciler(
    fake_backend: FakeBackend, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    Launch.objects.filter(pk=launch.pk).update(status=Status.SUBMITTING, submit_attempts=1)
    assert tasks.sync_launches()["resubmitted"] == 0
    assert not fake_backend.submits
    assert reload(launch).status == Status.SUBMITTING


def test_a_launch_stuck_in_submitting_is_failed_with_a_reason_after_the_attempt_limit(
    fake_backend: FakeBackend, fake_mlflow: FakeMlflow, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    fake_backend.unavailable = "the fake cluster is down."
    assert tasks.submit_launch(launch.pk) == "unavailable"
    launch = reload(launch)
    assert launch.status == Status.SUBMITTING
    assert "the fake cluster is down." in launch.status_reason

    retry_at = reload(launch).next_submit_at
    assert retry_at is not None
    assert retry_at <= timezone.now() + timedelta(seconds=tasks.SUBMIT_RETRY.ceiling(1))
    tasks.sync_launches()
    assert fake_backend.submits[launch.pk] == 1  # not before its retry time

    for _ in range(tasks.SUBMIT_RETRY.attempts + 2):
        age(launch, next_submit_at=timezone.now() - LONG_AGO)
        tasks.sync_launches()
        if reload(launch).status != Status.SUBMITTING:
            break

    assert launch.status == Status.FAILED
    assert f"could not submit after {tasks.SUBMIT_RETRY.attempts} attempts" in launch.status_reason
    assert "the fake cluster is down." in launch.status_reason
    assert fake_backend.submits[launch.pk] == tasks.SUBMIT_RETRY.attempts
    assert launch.finished_at is not None
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "FAILED"


def test_a_queued_launch_whose_message_was_lost_is_sent_again(
    fake_backend: FakeBackend, eager_tasks: None, launch_of: Callable[..., Launch]
) -> None:
    lost, fresh = launch_of(), launch_of()
    Launch.objects.filter(pk=lost.pk).update(created_at=timezone.now() - LONG_AGO)

    tasks.sync_launches()

    assert reload(lost).status == Status.PENDING
    assert fake_backend.submits[lost.pk] == 1
    assert reload(fresh).status == Status.QUEUED  # its message may still be on its way
    assert fake_backend.submits[fresh.pk] == 0


def test_submit_launch_twice_submits_once(fake_backend: FakeBackend, launch_of: Callable[..., Launch]) -> None:
    launch = launch_of()
    assert tasks.submit_launch(launch.pk) == "submitted"
    assert tasks.submit_launch(launch.pk) == "not queued"
    assert fake_backend.submits[launch.pk] == 1
    launch = reload(launch)
    assert launch.status == Status.PENDING
    assert launch.submit_attempts == 1
    assert launch.submitted_at is not None


def test_the_submit_message_is_sent_only_after_the_launch_commits(
    fake_backend: FakeBackend,
    eager_tasks: None,
    launch_of: Callable[..., Launch],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        launch = launch_of()
        assert not fake_backend.submits  # nothing reaches the backend before the commit
    assert len(callbacks) == 1
    assert reload(launch).status == Status.PENDING
    assert fake_backend.submits[launch.pk] == 1


def test_a_launch_rejected_by_the_backend_fails_with_the_reason(
    fake_backend: FakeBackend, fake_mlflow: FakeMlflow, eager_tasks: None, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    fake_backend.reject = "no such GPU model"
    assert tasks.submit_launch(launch.pk) == "rejected"
    launch = reload(launch)
    assert launch.status == Status.FAILED
    assert "rejected by the local backend: no such GPU model" in launch.status_reason
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "FAILED"


# --- transitions from observations --------------------------------------------------------
def test_a_launch_moves_pending_to_running_to_succeeded_and_closes_its_mlflow_run(
    fake_backend: FakeBackend, fake_mlflow: FakeMlflow, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    tasks.sync_launches()
    assert reload(launch).status == Status.PENDING
    assert launch.status_reason == "waiting in the fake queue"

    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()
    launch = reload(launch)
    assert launch.status == Status.RUNNING
    assert launch.started_at is not None
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == ""  # still running in MLflow
    assert fake_mlflow.runs[launch.mlflow_run_id]["tags"]["plinth.launch"] == str(launch.pk)

    fake_backend.set_state(launch.pk, "succeeded", exit_code=0)
    assert tasks.sync_launches()["ended"] == 1
    launch = reload(launch)
    assert launch.status == Status.SUCCEEDED
    assert launch.exit_code == 0
    assert launch.finished_at is not None and launch.started_at is not None
    assert launch.finished_at >= launch.started_at
    assert launch.mlflow_closed
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "FINISHED"
    assert tasks.sync_launches()["polled"] == 0  # ended launches are not polled again


def test_a_failed_job_fails_the_launch_with_the_backends_reason_and_exit_code(
    fake_backend: FakeBackend, fake_mlflow: FakeMlflow, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, "failed", "OOMKilled: the container ran out of memory", exit_code=137)
    tasks.sync_launches()
    launch = reload(launch)
    assert launch.status == Status.FAILED
    assert launch.status_reason == "OOMKilled: the container ran out of memory"
    assert launch.exit_code == 137
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "FAILED"


@pytest.mark.parametrize("state", ["pending", "running"])
def test_a_job_that_disappears_from_the_backend_fails_the_launch(
    fake_backend: FakeBackend, launch_of: Callable[..., Launch], state: str
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, state)
    tasks.sync_launches()
    fake_backend.forget(launch.pk)
    tasks.sync_launches()
    launch = reload(launch)
    assert launch.status == Status.FAILED
    assert "disappeared" in launch.status_reason


def test_a_cancelling_launch_whose_job_is_gone_is_cancelled(
    ada: User, fake_backend: FakeBackend, fake_mlflow: FakeMlflow, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()
    response = api_for(ada).post(f"/api/v1/launches/{launch.pk}/cancel/")  # its message is not sent here
    assert response.status_code == 200
    assert response.json()["status"] == Status.CANCELLING
    fake_backend.forget(launch.pk)

    tasks.sync_launches()

    launch = reload(launch)
    assert launch.status == Status.CANCELLED
    assert launch.status_reason == "cancel requested by ada"
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "KILLED"


def test_a_cancel_goes_through_the_backend_and_ends_cancelled(
    ada: User,
    fake_backend: FakeBackend,
    fake_mlflow: FakeMlflow,
    eager_tasks: None,
    launch_of: Callable[..., Launch],
    django_capture_on_commit_callbacks: Any,
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(ada).post(f"/api/v1/launches/{launch.pk}/cancel/")
    assert response.status_code == 200
    assert fake_backend.cancels[launch.pk] == 1
    launch = reload(launch)
    assert launch.status == Status.CANCELLED
    assert fake_mlflow.runs[launch.mlflow_run_id]["status"] == "KILLED"
    again = api_for(ada).post(f"/api/v1/launches/{launch.pk}/cancel/")
    assert again.status_code == 409


def test_a_job_that_fails_while_cancelling_counts_as_cancelled(
    ada: User, fake_backend: FakeBackend, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, "running")
    tasks.sync_launches()
    services.cancel_launch(ada, reload(launch))
    fake_backend.set_state(launch.pk, "failed", "terminated", exit_code=143)
    tasks.sync_launches()
    assert reload(launch).status == Status.CANCELLED


def test_the_reconciler_asks_the_backend_again_while_a_cancelled_job_still_runs(
    ada: User, fake_backend: FakeBackend, eager_tasks: None, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    tasks.submit_launch(launch.pk)
    fake_backend.set_state(launch.pk, "running")
    services.cancel_launch(ada, reload(launch))  # the cancel message is lost (on_commit never runs here)
    assert fake_backend.cancels[launch.pk] == 0
    tasks.sync_launches()
    assert fake_backend.cancels[launch.pk] == 1
    assert reload(launch).status == Status.CANCELLED


def test_cancelling_a_queued_launch_ends_it_at_once_and_it_is_never_submitted(
    ada: User, fake_backend: FakeBackend, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    response = api_for(ada).post(f"/api/v1/launches/{launch.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == Status.CANCELLED
    assert tasks.submit_launch(launch.pk) == "not queued"
    assert not fake_backend.submits


def test_only_the_launcher_or_a_lead_may_cancel(
    ada: User, lin: User, vic: User, team: Team, fake_backend: FakeBackend, launch_of: Callable[..., Launch]
) -> None:
    launch = launch_of()
    bea = make_user("bea")
    Membership.objects.create(team=team, user=bea, role=Role.MEMBER)

    assert api_for(vic).post(f"/api/v1/launches/{launch.pk}/cancel/").status_code == 403
    assert api_for(bea).post(f"/api/v1/launches/{launch.pk}/cancel/").status_code == 403
    assert reload(launch).status == Status.QUEUED
    assert api_for(lin).post(f"/api/v1/launches/{launch.pk}/cancel/").status_code == 200
    assert reload(launch).status == Status.CANCELLED


TERMINAL_STATES = sorted(TERMINAL)
OBSERVATIONS = [
    Observation("pending", "scheduling"),
    Observation("running"),
    Observation("succeeded", exit_code=0),
    Observation("failed", "boom", exit_code=1),
    Observation("cancelled", "cancelled"),
    Observation("missing"),
]


@pytest.mark.parametrize("status", TERMINAL_STATES)
@pytest.mark.parametrize("seen", OBSERVATIONS, ids=[o.state for o in OBSERVATIONS])
def test_an_observation_never_moves_a_launch_that_already_ended(
    launch_of: Callable[..., Launch], status: str, seen: Observation
) -> None:
    launch = launch_of()
    finished = timezone.now() - LONG_AGO
    Launch.objects.filter(pk=launch.pk).update(
        status=status, status_reason="the end", exit_code=42, finished_at=finished
    )
    launch = reload(launch)

    assert services.apply_observation(launch, seen) is False

    launch = reload(launch)
    assert (launch.status, launch.status_reason, launch.exit_code, launch.finished_at) == (
        status,
        "the end",
        42,
        finished,
    )


def test_a_stale_observation_of_an_earlier_status_does_not_overwrite_a_newer_one(
    launch_of: Callable[..., Launch],
) -> None:
    """Two workers: one read the row as `pending`, the other already moved it on."""
    launch = launch_of()
    Launch.objects.filter(pk=launch.pk).update(status=Status.PENDING)
    stale = reload(launch)
    Launch.objects.filter(pk=launch.pk).update(status=Status.SUCCEEDED, exit_code=0)

    assert services.apply_observation(stale, Observation("failed", "late news", exit_code=1)) is False
    assert reload(launch).status == Status.SUCCEEDED


def test_live_and_terminal_states_cover_every_status() -> None:
    assert set(Status.values) == LIVE | TERMINAL
    assert not LIVE & TERMINAL


@pytest.mark.mlflow
def test_a_run_deleted_in_mlflow_does_not_break_the_reconciler(
    ada: User, project: Project, train: Template, fake_backend: FakeBackend, mlflow_up: str
) -> None:
    from apps.tracking.gateway import MlflowGateway

    first = services.create_launch(ada, project, train)
    second = services.create_launch(ada, project, train)
    for launch in (first, second):
        tasks.submit_launch(launch.pk)
        fake_backend.set_state(launch.pk, "succeeded", exit_code=0)
    MlflowGateway(mlflow_up).delete_run(first.mlflow_run_id)  # someone tidied up in the MLflow UI

    tasks.sync_launches()

    assert reload(first).status == Status.SUCCEEDED
    assert reload(second).status == Status.SUCCEEDED
    assert reload(second).mlflow_closed
    assert MlflowGateway(mlflow_up).get_run(second.mlflow_run_id)["info"]["status"] == "FINISHED"
    tasks.sync_launches()  # and the next pass is not stuck on it either


def test_the_reconciler_never_starts_a_local_launch_that_is_being_cancelled(
    ada: User, team: Team, linked_project: Project, data_dir: Path, eager_tasks: None
) -> None:
    template = make_template(team, "waiting", ["python", "-c", "print('started')"], backends=["local"])
    launch = Launch.objects.create(
        project=linked_project,
        template=template,
        created_by=ada,
        backend="local",
        status=Status.CANCELLING,  # it was waiting for a free local slot when someone cancelled it
        status_reason="cancel requested by ada",
        submit_attempts=1,
    )

    tasks.sync_launches()

    assert not (data_dir / "launches" / str(launch.pk) / "pid").exists(), "the cancelled job was started"
    assert reload(launch).status == Status.CANCELLED
