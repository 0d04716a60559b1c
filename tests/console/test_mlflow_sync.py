"""The MLflow permission sync against a real `mlflow server --app-name basic-auth`: team
members get READ (viewers) or EDIT (members, leads) on the project's experiment and its
registered models, checked through MLflow's own client as each person; outsiders and
people who left get nothing; grants removed by hand come back, with an audit event."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from apps.accounts import services as account_services
from apps.accounts.models import Membership, Team, User
from apps.audit.models import AuditEvent
from apps.console import sync
from apps.console.mlflow_sync import MlflowAuthClient
from apps.console.models import SyncState, SyncStatus
from apps.projects.models import ExperimentState, Project
from apps.projects.services import link_experiment
from tests.console.conftest import AuthServer

pytestmark = [pytest.mark.django_db, pytest.mark.mlflow]
PASSWORDS = {"vic": "vic-Password-123", "ada": "ada-Password-123", "omar": "omar-Password-123"}


@pytest.fixture
def mlflow_auth(settings: Any, mlflow_auth_server: AuthServer) -> MlflowAuthClient:
    settings.MLFLOW_TRACKING_URI = mlflow_auth_server.url
    settings.MLFLOW_TRACKING_USERNAME = mlflow_auth_server.admin
    settings.MLFLOW_TRACKING_PASSWORD = mlflow_auth_server.password
    settings.PLINTH_MLFLOW_ADMIN_USERNAME = mlflow_auth_server.admin
    settings.PLINTH_MLFLOW_ADMIN_PASSWORD = mlflow_auth_server.password
    settings.MLFLOW_TIMEOUT = 15.0
    return MlflowAuthClient()


@pytest.fixture
def linked(
    mlflow_auth: MlflowAuthClient, project: Project, ada: User, vic: User, lin: User, omar: User, request: Any
) -> Project:
    """demo/demo with a fresh experiment (a per-test name: the server lives all session),
    people with their own MLflow accounts, and a model tagged with the project."""
    suffix = request.node.name[-40:].replace("[", "-").replace("]", "")
    Project.objects.filter(pk=project.pk).update(mlflow_experiment_name=f"demo/demo/{suffix}")
    linked = link_experiment(project.pk)
    assert linked is not None and linked.mlflow_state == ExperimentState.LINKED, linked and linked.mlflow_error
    for username, password in PASSWORDS.items():
        if not mlflow_auth.user_exists(username):
            mlflow_auth.create_user(username, password)
    admin = MlflowClient(settings_uri(mlflow_auth))
    with as_user(mlflow_auth, None):
        admin.create_registered_model(f"model-{suffix}", tags={"plinth.project": "demo/demo"})
    return linked


def settings_uri(client: MlflowAuthClient) -> str:
    return client.base_url


class as_user:
    """MLflow's client as one person (it reads MLFLOW_TRACKING_USERNAME/PASSWORD per request)."""

    def __init__(self, client: MlflowAuthClient, username: str | None) -> None:
        self.username = username or client.username
        self.password = PASSWORDS.get(username or "", client.session.auth[1])  # type: ignore[index]

    def __enter__(self) -> None:
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("MLFLOW_TRACKING_USERNAME", self.username)
        self.patch.setenv("MLFLOW_TRACKING_PASSWORD", self.password)
        self.patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def __exit__(self, *exc: object) -> None:
        self.patch.undo()


def can_read(client: MlflowAuthClient, username: str, experiment_id: str) -> bool:
    with as_user(client, username):
        try:
            MlflowClient(client.base_url).get_experiment(experiment_id)
        except MlflowException:
            return False
    return True


def can_write(client: MlflowAuthClient, username: str, experiment_id: str) -> bool:
    with as_user(client, username):
        try:
            MlflowClient(client.base_url).create_run(experiment_id)
        except MlflowException:
            return False
    return True


def test_a_viewer_reads_but_cannot_write_and_an_outsider_cannot_read(
    linked: Project, mlflow_auth: MlflowAuthClient
) -> None:
    experiment = linked.mlflow_experiment_id
    assert not can_read(mlflow_auth, "vic", experiment)  # NO_PERMISSIONS until Plinth grants
    state = sync.sync_mlflow(linked, mlflow_auth)
    assert state is not None and state.status == SyncStatus.IN_SYNC, state and state.message
    assert can_read(mlflow_auth, "vic", experiment)
    assert not can_write(mlflow_auth, "vic", experiment)
    assert can_read(mlflow_auth, "ada", experiment) and can_write(mlflow_auth, "ada", experiment)
    assert not can_read(mlflow_auth, "omar", experiment)
    # The project's registered models follow the same rule.
    [model] = mlflow_auth.project_models("demo/demo")[-1:]
    with as_user(mlflow_auth, "vic"):
        assert MlflowClient(mlflow_auth.base_url).get_registered_model(model).name == model
    with as_user(mlflow_auth, "omar"), pytest.raises(MlflowException):
        MlflowClient(mlflow_auth.base_url).get_registered_model(model)
    # lin had no MLflow account: the sync made one (with a random password).
    assert mlflow_auth.user_exists("lin")
    assert AuditEvent.objects.filter(verb="mlflow.synced", project_id=linked.pk).count() == 1


def test_a_second_pass_changes_nothing_and_leaving_the_team_takes_access_away(
    linked: Project, mlflow_auth: MlflowAuthClient, lin: User, team: Team
) -> None:
    sync.sync_mlflow(linked, mlflow_auth)
    state = sync.sync_mlflow(linked, mlflow_auth)
    assert state is not None and state.message == "In sync."
    account_services.remove_member(lin, Membership.objects.get(team=team, user__username="vic"))
    sync.sync_mlflow(linked, mlflow_auth)
    assert not can_read(mlflow_auth, "vic", linked.mlflow_experiment_id)
    assert can_read(mlflow_auth, "ada", linked.mlflow_experiment_id)


def test_grants_changed_by_hand_are_repaired(linked: Project, mlflow_auth: MlflowAuthClient) -> None:
    sync.sync_mlflow(linked, mlflow_auth)
    mlflow_auth.revoke("ada", "experiment", linked.mlflow_experiment_id)
    mlflow_auth.grant("omar", "experiment", linked.mlflow_experiment_id, "READ")  # not tracked: not Plinth's
    state = sync.sync_mlflow(linked, mlflow_auth)
    assert state is not None and state.status == SyncStatus.REPAIRED
    assert AuditEvent.objects.filter(verb="mlflow.drift_repaired", project_id=linked.pk).exists()
    assert can_write(mlflow_auth, "ada", linked.mlflow_experiment_id)


def test_a_wrong_admin_password_is_recorded_not_raised(linked: Project, settings: Any) -> None:
    settings.PLINTH_MLFLOW_ADMIN_PASSWORD = "wrong"
    [state] = sync.sync_project(linked.pk)
    assert state.status == SyncStatus.ERROR and "refused Plinth's admin account" in state.message
    assert SyncState.objects.get(project=linked, target="mlflow").status == SyncStatus.ERROR
