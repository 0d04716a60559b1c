"""The deployments API: shapes as the contract says, the services' validation as 400s with
field messages, 404 for other teams, 403 for viewers, 409 for state conflicts, 503 when the
serving backend is down; every change audited and followed by the reconcile task."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.deployments.models import Deployment, DeploymentStatus, RevisionStatus, RolloutEvent, RolloutStep
from apps.projects.models import Project
from apps.registry.models import AliasHistory, RegisteredModel
from tests.conftest import api_for
from tests.deployments.conftest import add_revision
from tests.deployments.fakes import FakeServing
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db

URL = "/api/v1/deployments/"


def test_a_member_creates_a_deployment_and_the_reconcile_follows(
    ada: User,
    project: Project,
    digits: RegisteredModel,
    django_capture_on_commit_callbacks: Any,
    no_reconcile: list[int],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        made = api_for(ada).post(URL, {"project": "demo/demo", "name": "digits-api", "model": "digits"}, format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert body["name"] == "digits-api"
    assert body["project"] == "demo/demo"
    assert body["model"] == "digits"
    assert body["alias"] == "champion"
    assert body["version"] is None
    assert body["status"] == "starting"
    assert body["serving_version"] is None
    assert body["url"] == "http://testserver/serve/demo/demo/digits-api/invocations"
    assert body["revisions"] == []
    assert body["canary_percent"] == 10 and body["max_error_rate"] == 0.05
    assert no_reconcile == [body["id"]]
    event = AuditEvent.objects.get(verb="deployment.create")
    assert event.actor == ada and event.after is not None and event.after["model"] == "digits"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Digits_API"}, "name"),
        ({"name": "-x"}, "name"),
        ({"name": "a" * 46}, "name"),
        ({"model": "nope"}, "model"),
        ({"alias": "champion", "version": 2}, "version"),
        ({"alias": "latest"}, "alias"),
        ({"canary_percent": 101}, "canary_percent"),
        ({"canary_percent": -1}, "canary_percent"),
        ({"canary_minutes": 1441}, "canary_minutes"),
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"max_p95_ms": 0}, "max_p95_ms"),
        ({"backend": "kubernetes"}, "backend"),
        ({"input_example": {"rows": [1]}}, "input_example"),
        ({"resources": {"gpu": 1}}, "resources"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    ada: User, project: Project, digits: RegisteredModel, body: dict[str, Any], field: str
) -> None:
    sent = {"project": "demo/demo", "name": "digits-api", "model": "digits", **body}
    refused = api_for(ada).post(URL, sent, format="json")
    assert refused.status_code == 400, refused.json()
    assert field in refused.json(), refused.json()
    assert not Deployment.objects.exists()
    assert not AuditEvent.objects.filter(verb="deployment.create").exists()


def test_a_taken_name_is_a_400_on_name(ada: User, deployment: Deployment) -> None:
    again = api_for(ada).post(URL, {"project": "demo/demo", "name": "digits-api", "model": "digits"}, format="json")
    assert again.status_code == 400
    assert "already has a deployment" in again.json()["name"][0]


def test_a_model_of_another_project_is_a_400_on_model(
    ada: User, project: Project, other_project: Project, digits: RegisteredModel
) -> None:
    RegisteredModel.objects.create(name="theirs", project=other_project)
    refused = api_for(ada).post(URL, {"project": "demo/demo", "name": "x", "model": "theirs"}, format="json")
    assert refused.status_code == 400 and "model" in refused.json()


def test_pinning_checks_the_version_in_mlflow(
    ada: User, project: Project, digits: RegisteredModel, fake_registry: FakeRegistry
) -> None:
    missing = api_for(ada).post(
        URL, {"project": "demo/demo", "name": "p", "model": "digits", "version": 9}, format="json"
    )
    assert missing.status_code == 400 and "no version 9" in missing.json()["version"][0]
    pinned = api_for(ada).post(
        URL, {"project": "demo/demo", "name": "p", "model": "digits", "version": 2}, format="json"
    )
    assert pinned.status_code == 201 and pinned.json()["version"] == 2
    fake_registry.down = True
    down = api_for(ada).patch(f"{URL}{pinned.json()['id']}/", {"version": 1}, format="json")
    assert down.status_code == 503
    assert Deployment.objects.get().pinned_version == 2


def test_who_may_do_what(ada: User, vic: User, omar: User, lin: User, root: User, deployment: Deployment) -> None:
    one = f"{URL}{deployment.pk}/"
    assert api_for(None).get(one).status_code == 401
    assert api_for(omar).get(one).status_code == 404
    assert api_for(omar).patch(one, {"canary_percent": 20}, format="json").status_code == 404
    assert api_for(vic).get(one).status_code == 200
    assert api_for(vic).patch(one, {"canary_percent": 20}, format="json").status_code == 403
    assert api_for(vic).delete(one).status_code == 403
    assert api_for(vic).post(f"{one}rollback/").status_code == 403
    viewer_create = api_for(vic).post(URL, {"project": "demo/demo", "name": "v", "model": "digits"}, format="json")
    assert viewer_create.status_code == 403
    assert (
        api_for(omar).post(URL, {"project": "demo/demo", "name": "o", "model": "digits"}, format="json").status_code
        == 404
    )
    assert api_for(lin).patch(one, {"canary_percent": 20}, format="json").status_code == 200
    assert api_for(root).patch(one, {"canary_percent": 30}, format="json").status_code == 200
    assert [d["name"] for d in api_for(omar).get(URL).json()["results"]] == []
    assert [d["name"] for d in api_for(vic).get(URL).json()["results"]] == ["digits-api"]
    assert api_for(ada).get(f"{URL}999999/").status_code == 404
    assert api_for(ada).get(f"{URL}abc/").status_code == 404


def test_patch_changes_the_policy_and_the_alias_audited(
    ada: User, deployment: Deployment, django_capture_on_commit_callbacks: Any, no_reconcile: list[int]
) -> None:
    one = f"{URL}{deployment.pk}/"
    with django_capture_on_commit_callbacks(execute=True):
        changed = api_for(ada).patch(
            one, {"canary_percent": 25, "max_error_rate": 0.1, "alias": "challenger"}, format="json"
        )
    assert changed.status_code == 200, changed.json()
    body = changed.json()
    assert (body["canary_percent"], body["max_error_rate"], body["alias"]) == (25, 0.1, "challenger")
    event = AuditEvent.objects.get(verb="deployment.update")
    assert event.before == {"alias": "champion", "canary_percent": 10, "max_error_rate": 0.05}
    assert event.after == {"alias": "challenger", "canary_percent": 25, "max_error_rate": 0.1}
    assert no_reconcile == [deployment.pk]
    bad = api_for(ada).patch(one, {"canary_minutes": -2}, format="json")
    assert bad.status_code == 400 and "canary_minutes" in bad.json()
    assert Deployment.objects.get().canary_minutes == 5.0


def test_delete_is_202_then_deleting_and_no_more_changes(
    ada: User, deployment: Deployment, django_capture_on_commit_callbacks: Any, no_reconcile: list[int]
) -> None:
    one = f"{URL}{deployment.pk}/"
    with django_capture_on_commit_callbacks(execute=True):
        gone = api_for(ada).delete(one)
    assert gone.status_code == 202
    assert gone.json()["status"] == "deleting"
    assert no_reconcile == [deployment.pk]
    assert AuditEvent.objects.filter(verb="deployment.delete").count() == 1
    assert api_for(ada).delete(one).status_code == 202  # asking again changes nothing
    assert AuditEvent.objects.filter(verb="deployment.delete").count() == 1
    assert api_for(ada).patch(one, {"canary_percent": 20}, format="json").status_code == 409


def test_rollback_sends_everything_back_to_the_warm_previous_revision(
    lin: User, deployment: Deployment, fake_serving: FakeServing
) -> None:
    earlier = timezone.now() - timedelta(minutes=10)
    add_revision(deployment, 1, RevisionStatus.READY, serving_at=earlier)
    new = add_revision(deployment, 2, RevisionStatus.SERVING, traffic=100, serving_at=timezone.now())
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.SERVING)
    AliasHistory.objects.create(model=RegisteredModel.objects.get(name="digits"), alias="champion", version=2)
    before = api_for(lin).get(f"{URL}{deployment.pk}/").json()
    assert (before["serving_version"], before["drift"]) == (2, False)
    done = api_for(lin).post(f"{URL}{deployment.pk}/rollback/")
    assert done.status_code == 200, done.json()
    body = done.json()
    assert body["serving_version"] == 1
    assert body["drift"] is True  # champion still names version 2
    traffic = {r["version"]: (r["status"], r["traffic"]) for r in body["revisions"]}
    assert traffic == {1: ("serving", 100), 2: ("retired", 0)}
    event = RolloutEvent.objects.get(deployment=deployment, step=RolloutStep.ROLLED_BACK)
    assert event.actor == lin
    assert AuditEvent.objects.filter(verb="deployment.rollback", actor=lin).count() == 1
    assert new.pk not in [r["id"] for r in body["revisions"] if r["status"] == "serving"]
    again = api_for(lin).post(f"{URL}{deployment.pk}/rollback/")
    assert again.status_code == 409
    assert "nothing to go back to" in again.json()["detail"]


def test_rollback_during_a_canary_returns_to_the_stable_revision(
    ada: User, deployment: Deployment, fake_serving: FakeServing
) -> None:
    add_revision(deployment, 1, RevisionStatus.SERVING, traffic=90, serving_at=timezone.now())
    add_revision(deployment, 2, RevisionStatus.SERVING, traffic=10, is_canary=True)
    done = api_for(ada).post(f"{URL}{deployment.pk}/rollback/")
    assert done.status_code == 200, done.json()
    assert {r["version"]: r["traffic"] for r in done.json()["revisions"]} == {1: 100, 2: 0}


def test_rollback_with_nothing_serving_is_a_409(ada: User, deployment: Deployment, fake_serving: FakeServing) -> None:
    refused = api_for(ada).post(f"{URL}{deployment.pk}/rollback/")
    assert refused.status_code == 409
    assert not AuditEvent.objects.filter(verb="deployment.rollback").exists()


def test_metrics_per_revision_and_their_window(
    ada: User, vic: User, deployment: Deployment, fake_serving: FakeServing
) -> None:
    revision = add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    fake_serving.feed(revision, 200, 10.0, count=8)
    fake_serving.feed(revision, 503, 40.0, count=2)
    got = api_for(vic).get(f"{URL}{deployment.pk}/metrics/?minutes=5")
    assert got.status_code == 200, got.json()
    (row,) = got.json()["revisions"]
    assert (row["version"], row["requests"], row["errors_5xx"], row["error_rate"]) == (1, 10, 2, 0.2)
    assert row["p50_ms"] == 10.0 and row["p99_ms"] == 40.0
    for bad in ("0", "1441", "abc", "-3"):
        refused = api_for(vic).get(f"{URL}{deployment.pk}/metrics/?minutes={bad}")
        assert refused.status_code == 400 and "minutes" in refused.json(), bad
    fake_serving.down = True
    down = api_for(vic).get(f"{URL}{deployment.pk}/metrics/")
    assert down.status_code == 503
    assert "unreachable" in down.json()["detail"]


def test_the_list_filters_by_project_status_and_model(ada: User, deployment: Deployment) -> None:
    assert api_for(ada).get(f"{URL}?project=demo/demo").json()["count"] == 1
    assert api_for(ada).get(f"{URL}?status=serving").json()["count"] == 0
    assert api_for(ada).get(f"{URL}?status=starting&model=digits").json()["count"] == 1
    assert api_for(ada).get(f"{URL}?status=bogus").status_code == 400
