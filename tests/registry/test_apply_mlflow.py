"""Applying promotions against a real `mlflow server`: models are registered with the plain
MLflow client, Plinth moves the alias, and MLflow's own client reads the result.

Tasks run in this thread (eager) after each commit, so "approve" here goes all the way
to MLflow, as it does within seconds with a worker."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.launches import services as launch_services
from apps.launches.demo import SKLEARN_DIGITS
from apps.launches.models import Launch
from apps.launches.models import Status as LaunchStatus
from apps.projects.models import Project
from apps.registry import applying
from apps.registry.mlflow import RegistryGateway
from apps.registry.models import AliasHistory, PromotionRequest, RegisteredModel, Source, Status
from apps.registry.tasks import apply_promotion, reconcile_aliases
from tests.conftest import api_for, client_for
from tests.registry.conftest import Registered

pytestmark = [pytest.mark.mlflow, pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]

PROMOTIONS = "/api/v1/promotions/"


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks: Any) -> Any:
    """Run what services queue for after the commit (the apply task, notifications) when
    the block ends, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def ask(user: User, name: str, version: int, alias: str = "champion") -> int:
    response = api_for(user).post(
        PROMOTIONS,
        {"model": name, "version": version, "alias": alias, "justification": f"v{version} is better"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return int(response.json()["id"])


def promote(asker: User, approver: User, name: str, version: int, run_on_commit: Any) -> PromotionRequest:
    with run_on_commit():
        pk = ask(asker, name, version)
    with run_on_commit():
        response = api_for(approver).post(f"{PROMOTIONS}{pk}/approve/", {"comment": "ok"}, format="json")
    assert response.status_code == 200, response.json()
    return PromotionRequest.objects.get(pk=pk)


def test_after_approval_mlflow_reads_the_alias_as_the_approved_version(
    ada: User, lin: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    request = promote(ada, lin, name, 2, run_on_commit)

    assert (request.status, request.status_reason) == (Status.APPLIED, "")
    assert registered.alias(name, "champion") == 2  # MLflow's own client agrees
    tags = registered.client.get_model_version(name, "2").tags
    assert tags["plinth.promotion_request"] == str(request.pk)
    assert tags["plinth.approved_by"] == "lin"
    row = AliasHistory.objects.get(request=request)
    assert (row.alias, row.version, row.previous_version, row.valid_to, row.source) == (
        "champion",
        2,
        None,
        None,
        Source.PLINTH,
    )
    history = api_for(ada).get(f"/api/v1/models/{name}/aliases/history/").json()
    assert [(h["alias"], h["version"], h["to"], h["request"]) for h in history] == [("champion", 2, None, request.pk)]
    assert history[0]["from"] and history[0]["approved_by"] == ["lin"] and history[0]["requested_by"] == "ada"
    assert AuditEvent.objects.filter(verb="promotion.applied", target_id=str(request.pk)).count() == 1
    # The requester heard of the decision and of the result; the approver of the request.
    subjects = [(m.to, m.subject) for m in mail.outbox]
    assert (["lin@example.test"], f"[Plinth] ada asks to promote {name} version 2 to champion") in subjects
    assert any(to == ["ada@example.test"] and "approved by lin" in s for to, s in subjects)
    assert any(to == ["ada@example.test"] and s.endswith("applied") for to, s in subjects)


def test_the_model_page_shows_the_alias_who_asked_who_approved_and_the_evidence(
    ada: User, lin: User, vic: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90, "f1": 0.88}, {"accuracy": 0.95, "f1": 0.93}])
    first = promote(ada, lin, name, 1, run_on_commit)
    second = promote(ada, lin, name, 2, run_on_commit)
    page = client_for(vic).get(f"/models/registered/{name}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-alias="champion"' in html and "version 2" in html
    assert f"request #{second.pk}" in html and "0.9500" in html and "0.9000" in html
    history = page.context["history"]
    assert [(h.version, h.previous_version, h.request_id) for h in history] == [(2, 1, second.pk), (1, None, first.pk)]
    assert history[1].valid_to == history[0].valid_from
    evidence = client_for(vic).get(f"/models/requests/{second.pk}/")
    assert evidence.context["figure"], "the evidence chart is missing"
    assert [r["metric"] for r in evidence.context["rows"]] == ["accuracy", "f1"]


def test_rollback_moves_the_alias_back_through_the_policy(
    ada: User, lin: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    promote(ada, lin, name, 1, run_on_commit)
    promote(ada, lin, name, 2, run_on_commit)
    response = api_for(ada).post(
        f"/api/v1/models/{name}/aliases/champion/rollback/", {"justification": "v2 misbehaves"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["version"], body["status"], body["evidence"]["holder"]["version"]) == (
        "rollback",
        1,
        "pending",
        2,
    )
    assert registered.alias(name, "champion") == 2  # nothing moves before the approval
    with run_on_commit():
        assert api_for(lin).post(f"{PROMOTIONS}{body['id']}/approve/").json()["status"] == "approved"
    assert registered.alias(name, "champion") == 1
    current = AliasHistory.objects.get(model__name=name, valid_to__isnull=True)
    assert (current.version, current.previous_version, current.request_id) == (1, 2, body["id"])


def test_a_leads_emergency_rollback_skips_the_quorum_but_not_the_record(
    ada: User, lin: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    promote(ada, lin, name, 1, run_on_commit)
    promote(ada, lin, name, 2, run_on_commit)
    url = f"/api/v1/models/{name}/aliases/champion/rollback/"
    refused = api_for(ada).post(url, {"justification": "now!", "emergency": True}, format="json")
    assert refused.status_code == 403
    with run_on_commit():
        response = api_for(lin).post(url, {"justification": "v2 is down", "emergency": True}, format="json")
    assert response.status_code == 201
    request = PromotionRequest.objects.get(pk=response.json()["id"])
    assert (request.status, request.emergency, request.requested_by) == (Status.APPLIED, True, lin)
    assert registered.alias(name, "champion") == 1
    assert AuditEvent.objects.filter(verb="promotion.emergency_rollback", actor=lin).count() == 1
    assert AliasHistory.objects.get(request=request).previous_version == 2


def test_nothing_to_roll_back_to_is_409(
    ada: User, lin: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90}])
    promote(ada, lin, name, 1, run_on_commit)
    response = api_for(ada).post(f"/api/v1/models/{name}/aliases/champion/rollback/", {"justification": "x"})
    assert response.status_code == 409


def test_the_task_run_twice_changes_mlflow_once(
    ada: User, lin: User, project: Project, registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    pk = ask(ada, name, 2)
    api_for(lin).post(f"{PROMOTIONS}{pk}/approve/")  # the queued task is not run: we run it by hand
    sets: list[tuple[str, str, Any]] = []
    real_set = RegistryGateway.set_alias
    monkeypatch.setattr(
        RegistryGateway,
        "set_alias",
        lambda self, *a: (sets.append(a), real_set(self, *a))[1],  # type: ignore[func-returns-value]
    )
    assert apply_promotion(pk) == "applied"
    assert apply_promotion(pk) == "already applied"
    assert sets == [(name, "champion", 2)]
    assert AliasHistory.objects.filter(model__name=name).count() == 1
    assert AuditEvent.objects.filter(verb="promotion.applied").count() == 1


def test_a_worker_dying_between_the_move_and_the_record_is_finished_once(
    ada: User, lin: User, project: Project, registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alias moved, then the worker died before recording it: the next attempt (after
    the lease ends) finds the alias already moved and records it once, with the right
    previous holder (the one before the move, not the target itself)."""
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    registered.client.set_registered_model_alias(name, "champion", "1")
    pk = ask(ada, name, 2)
    api_for(lin).post(f"{PROMOTIONS}{pk}/approve/")
    real_record = applying._record_applied

    def die(*args: Any) -> Any:
        raise SystemExit("worker killed")

    monkeypatch.setattr(applying, "_record_applied", die)
    with pytest.raises(SystemExit):
        apply_promotion(pk)
    assert registered.alias(name, "champion") == 2
    assert PromotionRequest.objects.get(pk=pk).status == Status.APPLYING
    assert apply_promotion(pk) == "claimed by another worker"  # the lease still holds
    monkeypatch.setattr(applying, "_record_applied", real_record)
    PromotionRequest.objects.filter(pk=pk).update(lease_until="2000-01-01T00:00:00Z")
    assert apply_promotion(pk) == "applied"
    rows = list(AliasHistory.objects.filter(model__name=name).order_by("valid_from", "id"))
    assert [(r.version, r.previous_version, r.source) for r in rows] == [
        (1, None, Source.OBSERVED),  # MLflow had champion → 1 before Plinth ever moved it
        (2, 1, Source.PLINTH),
    ]


def test_an_alias_set_directly_in_mlflow_shows_up_as_changed_outside_plinth(
    ada: User, lin: User, vic: User, project: Project, registered: Registered, run_on_commit: Any
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    promote(ada, lin, name, 1, run_on_commit)
    mail.outbox.clear()
    registered.client.set_registered_model_alias(name, "champion", "2")  # someone with MLflow edit rights

    with run_on_commit():
        counts = reconcile_aliases()
    # (the server is shared by the session: models of earlier tests are found, and "observed")
    assert counts["recorded"] >= 1
    assert AliasHistory.objects.filter(model__name=name).count() == 2
    row = AliasHistory.objects.get(model__name=name, valid_to__isnull=True)
    assert (row.version, row.previous_version, row.source, row.request) == (2, 1, Source.OUTSIDE, None)
    assert AuditEvent.objects.filter(verb="alias.changed_outside").count() == 1
    assert [(m.to, m.subject) for m in mail.outbox] == [
        (["lin@example.test"], f"[Plinth] {name}@champion was changed outside Plinth")
    ]
    page = client_for(vic).get(f"/models/registered/{name}/")
    assert 'data-flag="champion"' in page.content.decode()
    listed = api_for(vic).get("/api/v1/models/?project=demo/demo").json()["results"]
    assert next(m for m in listed if m["name"] == name)["changed_outside_plinth"] == ["champion"]
    assert reconcile_aliases()["recorded"] == 0  # recorded once, not on every pass

    # A removal outside Plinth is drift too; an alias Plinth sees for the first time is not.
    registered.client.delete_registered_model_alias(name, "champion")
    registered.client.set_registered_model_alias(name, "staging", "1")
    reconcile_aliases()
    latest = {r.alias: r for r in AliasHistory.objects.filter(model__name=name, valid_to__isnull=True)}
    assert (latest["champion"].version, latest["champion"].source) == (None, Source.OUTSIDE)
    assert (latest["staging"].version, latest["staging"].source) == (1, Source.OBSERVED)


def test_a_model_registered_elsewhere_is_attached_by_a_lead(
    lin: User, ada: User, project: Project, registered: Registered
) -> None:
    name = registered.model(None, [{"accuracy": 0.9}])
    assert api_for(ada).get(f"/api/v1/models/{name}/").status_code == 404  # not in any project yet
    refused = client_for(ada).post("/models/projects/demo/demo/attach/", {"name": name})
    assert refused.status_code == 403
    response = client_for(lin).post("/models/projects/demo/demo/attach/", {"name": name})
    assert response.status_code == 302
    assert registered.client.get_registered_model(name).tags["plinth.project"] == "demo/demo"
    body = api_for(ada).get(f"/api/v1/models/{name}/").json()
    assert body["project"] == "demo/demo"
    # Its run is in no experiment of demo/demo: shown as outside the project, without data.
    assert body["versions"][0]["run"]["outside_project"] is True
    assert body["versions"][0]["run"]["metrics"] == {}
    assert AuditEvent.objects.filter(verb="model.attached", actor=lin).count() == 1


def test_the_project_models_page_lists_what_mlflow_tags(
    vic: User, project: Project, registered: Registered, omar: User
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.91}])
    registered.client.set_registered_model_alias(name, "champion", "2")
    page = client_for(vic).get("/models/projects/demo/demo/")
    assert page.status_code == 200
    shown = {m.name: m for m in page.context["models"]}
    assert shown[name].aliases == {"champion": 2} and shown[name].latest_version == 2
    assert client_for(omar).get("/models/projects/demo/demo/").status_code == 404


def test_a_model_registered_from_a_launch_joins_the_launchs_project(
    root: User, ada: User, project: Project, registered: Registered
) -> None:
    """Training code registers with the plain MLflow client (no project tag); the alias
    reconciler finds the version's run among recent launches and tags the model."""
    name = registered.model(None, [{"accuracy": 0.9}])
    run_id = str(registered.client.get_model_version(name, "1").run_id)
    template = launch_services.create_template(root, None, **SKLEARN_DIGITS)
    Launch.objects.create(
        project=project,
        template=template,
        created_by=ada,
        status=LaunchStatus.SUCCEEDED,
        backend="local",
        parameters={"register_model": name},
        mlflow_run_id=run_id,
        finished_at=timezone.now(),
    )
    assert reconcile_aliases()["adopted"] >= 1
    assert registered.client.get_registered_model(name).tags["plinth.project"] == "demo/demo"
    assert RegisteredModel.objects.get(name=name).project == project
    assert api_for(ada).get(f"/api/v1/models/{name}/").status_code == 200
