"""Forms follow post/redirect/get: every page POST of the authorization matrix that
succeeds answers a redirect, and what it redirects to is a page that changes nothing —
so a refresh (or the back button) after a success never repeats the change."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from apps.audit.models import AuditEvent
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import MlflowError, MlflowGateway
from tests.access.matrix_vocab import World
from tests.access.test_matrix import (  # noqa: F401 - the matrix's fixtures, used here too
    CASES,
    Case,
    _tasks_run_in_process,
    describe,
    send,
    sent,
    world,
)
from tests.conftest import client_for
from tests.launches.conftest import FakeMlflow

PAGE_POSTS = [c for c in CASES if c.op.method == "POST" and not c.is_api]
# Pages whose success needs MLflow (down in the matrix world) and a deleted experiment: they
# run against the launch tests' MLflow fake, given experiments, with demo/demo's deleted.
NEEDS_A_DELETED_EXPERIMENT = {"projects:restore-experiment", "projects:replace-experiment"}


class ExperimentsFake(FakeMlflow):
    """The launch tests' MLflow fake with experiments as MLflow answers them ({experiment_id,
    name, lifecycle_stage, tags}); MLflow's refusal to restore one it does not have."""

    def __init__(self) -> None:
        super().__init__()
        self.experiments: dict[str, dict[str, Any]] = {}
        self._experiment_ids = itertools.count(100)

    def delete(self, experiment_id: str, name: str) -> None:
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "name": name,
            "lifecycle_stage": "deleted",
            "tags": [],
        }
        self.deleted_experiments.add(experiment_id)

    def get_experiment(self, experiment_id: str) -> dict[str, Any] | None:
        return self.experiments.get(experiment_id)

    def get_experiment_by_name(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.experiments.values() if e["name"] == name), None)

    def restore_experiment(self, experiment_id: str) -> None:
        if experiment_id not in self.experiments:
            raise MlflowError(f"No Experiment with id={experiment_id} exists", error_code="RESOURCE_DOES_NOT_EXIST")
        self.experiments[experiment_id]["lifecycle_stage"] = "active"
        self.deleted_experiments.discard(experiment_id)

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        experiment_id = str(next(self._experiment_ids))
        tagged = [{"key": k, "value": v} for k, v in (tags or {}).items()]
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "name": name,
            "lifecycle_stage": "active",
            "tags": tagged,
        }
        return experiment_id


def deleted_in_mlflow(matrix_world: World, monkeypatch: pytest.MonkeyPatch) -> ExperimentsFake:
    """MLflow answers from an ExperimentsFake, where demo/demo's experiment was deleted (and the
    portal has seen it): what the restore and replace pages are for."""
    fake = ExperimentsFake()
    project = matrix_world.project
    fake.delete(project.mlflow_experiment_id, project.mlflow_experiment_name)
    for method in ("get_experiment", "get_experiment_by_name", "restore_experiment", "create_experiment"):
        monkeypatch.setattr(
            MlflowGateway, method, lambda self, *args, _m=method, **kwargs: getattr(fake, _m)(*args, **kwargs)
        )
    Project.objects.filter(pk=project.pk).update(mlflow_state=ExperimentState.DELETED)
    return fake


def test_the_experiment_pages_are_walked_with_mlflow_faked() -> None:
    assert {c.name for c in PAGE_POSTS} >= NEEDS_A_DELETED_EXPERIMENT


def test_the_matrix_has_page_posts_to_walk() -> None:
    names = {c.name for c in PAGE_POSTS}
    assert {"account", "teams:create", "launches:create", "launches:cancel"} <= names


@pytest.mark.parametrize("case", PAGE_POSTS, ids=str)
def test_a_successful_post_redirects_and_a_refresh_repeats_nothing(
    case: Case,
    world: World,  # noqa: F811 - the matrix's fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = deleted_in_mlflow(world, monkeypatch) if case.name in NEEDS_A_DELETED_EXPERIMENT else None
    events = AuditEvent.objects.count()
    response = send(case, world, case.op.allowed)
    assert response.status_code < 500, f"{case}: {describe(response)}"
    if response.status_code >= 400 and case.name not in NEEDS_A_DELETED_EXPERIMENT:
        pytest.skip(f"{case}: no success to check here ({describe(response)}, e.g. MLflow is down in tests)")
    assert response.status_code == 302, f"{case}: a successful POST answered {describe(response)}, not a redirect"
    changed = AuditEvent.objects.count()
    location = response["Location"]
    if location.startswith("/login/") or case.name in ("logout", "login"):
        return  # signing in and out: the session is the change, not an audited row
    # The browser follows with a GET, and a refresh repeats that GET: neither changes anything.
    client = client_for(world.users[case.op.allowed])
    for _ in range(2):
        followed = client.get(location)
        assert followed.status_code in (200, 302), f"{case}: GET {location} answered {describe(followed)}"
    assert AuditEvent.objects.count() == changed, f"{case}: following the redirect changed something"
    assert changed >= events
    if fake is not None:  # the change happened once: one experiment restored or created, and linked
        project = Project.objects.get(pk=world.project.pk)
        assert project.mlflow_state == ExperimentState.LINKED, case
        assert [e["lifecycle_stage"] for e in fake.experiments.values()].count("active") == 1, fake.experiments
        assert changed > events, f"{case}: the change was not audited"
