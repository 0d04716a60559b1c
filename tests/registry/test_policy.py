"""The promotion policy, clause by clause, through the API (MLflow's registry is the
stateful fake here: these rules are Plinth's, not MLflow's).

ada (member) asks; lin and lin2 (leads) decide; vic (viewer) and bea (member) cannot;
omar (another team) does not even see the request; root (platform admin) may decide."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.projects.models import Project
from apps.registry import services
from apps.registry.models import PromotionRequest, Status, Vote
from apps.registry.policies import pending_count
from apps.registry.tasks import reconcile_promotions
from tests.conftest import api_for
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db

PROMOTIONS = "/api/v1/promotions/"


def ask(user: User, version: int = 2, alias: str = "champion", justification: str = "better accuracy") -> Any:
    return api_for(user).post(
        PROMOTIONS,
        {"model": "digits", "version": version, "alias": alias, "justification": justification},
        format="json",
    )


def decide(user: User, pk: int, verb: str = "approve", comment: str = "") -> Any:
    return api_for(user).post(f"{PROMOTIONS}{pk}/{verb}/", {"comment": comment}, format="json")


@pytest.fixture
def asked(ada: User, project: Project, fake_registry: FakeRegistry) -> int:
    response = ask(ada)
    assert response.status_code == 201, response.json()
    return int(response.json()["id"])


def status_of(pk: int) -> str:
    return PromotionRequest.objects.get(pk=pk).status


# --- asking --------------------------------------------------------------------------------
def test_a_member_asks_and_the_evidence_is_captured(ada: User, project: Project, fake_registry: FakeRegistry) -> None:
    fake_registry.models["digits"]["aliases"]["champion"] = 1
    response = ask(ada)
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["model"], body["version"], body["alias"], body["requested_by"]) == (
        "pending",
        "digits",
        2,
        "champion",
        "ada",
    )
    assert body["evidence"]["candidate"]["metrics"] == {"accuracy": 0.95, "f1": 0.94}
    assert body["evidence"]["holder"]["version"] == 1
    assert body["evidence"]["holder"]["metrics"]["accuracy"] == 0.90
    assert AuditEvent.objects.filter(verb="promotion.promotion_requested", actor=ada).count() == 1


def test_it_refuses_a_viewer_who_asks(vic: User, project: Project, fake_registry: FakeRegistry) -> None:
    assert ask(vic).status_code == 403


def test_an_outsider_cannot_even_see_the_model(omar: User, project: Project, fake_registry: FakeRegistry) -> None:
    assert ask(omar).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [({"alias": "production"}, "alias"), ({"justification": "  "}, "justification"), ({"version": 9}, "version")],
)
def test_it_answers_400_with_the_field(
    ada: User, project: Project, fake_registry: FakeRegistry, change: dict[str, Any], field: str
) -> None:
    body = {"model": "digits", "version": 2, "alias": "champion", "justification": "why", **change}
    response = api_for(ada).post(PROMOTIONS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_it_refuses_to_ask_for_the_version_that_already_holds_the_alias(
    ada: User, project: Project, fake_registry: FakeRegistry
) -> None:
    fake_registry.models["digits"]["aliases"]["champion"] = 2
    response = ask(ada)
    assert response.status_code == 409
    assert "already holds" in response.json()["detail"]


def test_the_same_open_request_twice_is_a_conflict(ada: User, asked: int) -> None:
    response = ask(ada)
    assert response.status_code == 409
    assert f"#{asked}" in response.json()["detail"]


def test_mlflow_down_answers_503_and_writes_nothing(ada: User, project: Project, fake_registry: FakeRegistry) -> None:
    fake_registry.down = True
    response = ask(ada)
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]
    assert not PromotionRequest.objects.exists()


# --- who decides -------------------------------------------------------------------------
def test_it_refuses_self_approval(lin: User, project: Project, fake_registry: FakeRegistry) -> None:
    """Even a lead, even with a quorum of 1: nobody approves their own request."""
    response = ask(lin)
    pk = response.json()["id"]
    refused = decide(lin, pk)
    assert refused.status_code == 403
    assert "own request" in refused.json()["detail"]
    assert status_of(pk) == Status.PENDING
    assert not Vote.objects.exists()


def test_it_refuses_self_approval_by_a_platform_admin(
    root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    pk = ask(root).json()["id"]
    assert decide(root, pk).status_code == 403
    assert status_of(pk) == Status.PENDING


@pytest.mark.parametrize("who", ["vic", "bea"])
def test_it_refuses_approval_by_a_viewer_or_a_member(
    request: pytest.FixtureRequest, asked: int, vic: User, bea: User, who: str
) -> None:
    user = {"vic": vic, "bea": bea}[who]
    assert decide(user, asked).status_code == 403
    assert decide(user, asked, "reject").status_code == 403
    assert status_of(asked) == Status.PENDING


def test_an_outsider_gets_404(asked: int, omar: User) -> None:
    assert decide(omar, asked).status_code == 404
    assert api_for(omar).get(f"{PROMOTIONS}{asked}/").status_code == 404


def test_a_lead_approves_and_the_apply_is_queued_once(
    asked: int, lin: User, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr("apps.registry.tasks.apply_promotion.delay", lambda pk: sent.append(pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(lin, asked, comment="ship it")
    assert response.status_code == 200
    assert response.json()["status"] == "approved"
    assert response.json()["votes"] == [
        {
            "voter": "lin",
            "decision": "approve",
            "comment": "ship it",
            "created_at": response.json()["votes"][0]["created_at"],
        }
    ]
    assert sent == [asked]


def test_a_platform_admin_may_approve(asked: int, root: User) -> None:
    assert decide(root, asked).json()["status"] == "approved"


def test_named_approvers_replace_the_leads(asked: int, lin: User, bea: User, project: Project, root: User) -> None:
    services.update_policy(root, project, approvers=["bea"])
    assert decide(lin, asked).status_code == 403
    assert decide(bea, asked).json()["status"] == "approved"


# --- quorum, votes, rejection --------------------------------------------------------------
def test_a_quorum_of_two_needs_two_different_leads(
    ada: User, lin: User, lin2: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, required_approvals=2)
    pk = ask(ada).json()["id"]
    first = decide(lin, pk)
    assert (first.status_code, first.json()["status"], first.json()["approvals"]) == (200, "pending", 1)
    second = decide(lin2, pk)
    assert (second.json()["status"], second.json()["approvals"]) == ("approved", 2)


def test_a_double_vote_by_the_same_lead_counts_once(
    ada: User, lin: User, lin2: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, required_approvals=2)
    pk = ask(ada).json()["id"]
    assert decide(lin, pk).status_code == 200
    again = decide(lin, pk)
    assert (again.status_code, again.json()["status"], again.json()["approvals"]) == (200, "pending", 1)
    assert Vote.objects.filter(request_id=pk).count() == 1


def test_one_rejection_rejects(
    ada: User, lin: User, lin2: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, required_approvals=2)
    pk = ask(ada).json()["id"]
    decide(lin, pk)
    response = decide(lin2, pk, "reject", comment="f1 dropped on the holdout set")
    assert response.json()["status"] == "rejected"
    assert decide(lin2, pk).status_code == 409  # and it stays rejected


def test_a_changed_mind_replaces_the_vote_and_a_rejection_still_rejects(
    ada: User, lin: User, lin2: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, required_approvals=2)
    pk = ask(ada).json()["id"]
    decide(lin, pk)
    assert decide(lin, pk, "reject").json()["status"] == "rejected"
    assert list(Vote.objects.filter(request_id=pk).values_list("decision", flat=True)) == ["reject"]


@pytest.mark.parametrize("how", ["approved", "rejected", "withdrawn"])
def test_acting_on_a_request_that_is_no_longer_pending_is_409(
    asked: int, lin: User, lin2: User, ada: User, how: str
) -> None:
    if how == "withdrawn":
        assert api_for(ada).post(f"{PROMOTIONS}{asked}/withdraw/").json()["status"] == "withdrawn"
    else:
        decide(lin, asked, "approve" if how == "approved" else "reject")
    assert status_of(asked) == how
    for verb in ("approve", "reject"):
        response = decide(lin2, asked, verb)
        assert response.status_code == 409, verb
        assert "only pending requests" in response.json()["detail"]
    assert api_for(ada).post(f"{PROMOTIONS}{asked}/withdraw/").status_code == 409


def test_only_the_requester_or_a_lead_withdraws(asked: int, bea: User, vic: User, lin: User) -> None:
    assert api_for(bea).post(f"{PROMOTIONS}{asked}/withdraw/").status_code == 403
    assert api_for(vic).post(f"{PROMOTIONS}{asked}/withdraw/").status_code == 403
    assert api_for(lin).post(f"{PROMOTIONS}{asked}/withdraw/").json()["status"] == "withdrawn"


# --- expiry --------------------------------------------------------------------------------
def test_a_request_expires_after_the_policys_days(
    ada: User, lin: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, expiry_days=3)
    pk = ask(ada).json()["id"]
    made = PromotionRequest.objects.get(pk=pk)
    assert timedelta(days=3) - (made.expires_at - made.created_at) < timedelta(seconds=1)
    PromotionRequest.objects.filter(pk=pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = decide(lin, pk)
    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
    assert status_of(pk) == Status.EXPIRED
    assert AuditEvent.objects.filter(verb="promotion.expired").count() == 1


def test_the_reconciler_expires_what_nobody_decided(asked: int, lin: User) -> None:
    assert pending_count(lin) == 1
    PromotionRequest.objects.filter(pk=asked).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert pending_count(lin) == 0  # the inbox no longer offers it, even before the sweep
    assert reconcile_promotions()["expired"] == 1
    assert status_of(asked) == Status.EXPIRED
    assert reconcile_promotions()["expired"] == 0


# --- the metric gate -------------------------------------------------------------------------
def test_a_failing_gate_blocks_approval_with_the_numbers(
    ada: User, lin: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, gate_metric="accuracy", gate_comparison="gte")
    fake_registry.models["digits"]["aliases"]["champion"] = 2
    pk = ask(ada, version=1).json()["id"]  # 0.90 against the champion's 0.95
    response = decide(lin, pk)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "accuracy" in detail and "0.9" in detail and "0.95" in detail and "≥" in detail
    assert status_of(pk) == Status.PENDING
    assert decide(lin, pk, "reject").json()["status"] == "rejected"  # a failing gate still lets you reject


def test_a_passing_gate_lets_approval_through(
    ada: User, lin: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, gate_metric="accuracy", gate_comparison="gte")
    fake_registry.models["digits"]["aliases"]["champion"] = 1
    pk = ask(ada, version=2).json()["id"]
    assert api_for(lin).get(f"{PROMOTIONS}{pk}/").json()["gate"]["passed"] is True
    assert decide(lin, pk).json()["status"] == "approved"


def test_a_lower_is_better_gate(
    ada: User, lin: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    fake_registry.add_version("digits", {"loss": 0.30})
    fake_registry.add_version("digits", {"loss": 0.20})
    fake_registry.models["digits"]["aliases"]["champion"] = 4
    services.update_policy(root, project, gate_metric="loss", gate_comparison="lte")
    pk = ask(ada, version=3).json()["id"]
    assert decide(lin, pk).status_code == 409


def test_a_candidate_without_the_gate_metric_fails_the_gate(
    ada: User, lin: User, root: User, project: Project, fake_registry: FakeRegistry
) -> None:
    services.update_policy(root, project, gate_metric="auc", gate_comparison="gte")
    pk = ask(ada).json()["id"]
    assert "no metric 'auc'" in decide(lin, pk).json()["detail"]


# --- the policy itself -----------------------------------------------------------------------
def test_policy_edits_are_for_leads_and_audited(lin: User, ada: User, project: Project) -> None:
    url = f"/api/v1/projects/{project.pk}/promotion-policy/"
    assert api_for(ada).get(url).json()["allowed_aliases"] == ["champion"]
    assert api_for(ada).patch(url, {"expiry_days": 2}, format="json").status_code == 403
    response = api_for(lin).patch(url, {"allowed_aliases": ["champion", "staging"], "expiry_days": 2}, format="json")
    assert response.status_code == 200
    assert (response.json()["allowed_aliases"], response.json()["expiry_days"]) == (["champion", "staging"], 2)
    event = AuditEvent.objects.get(verb="promotion.policy_updated")
    assert event.actor == lin
    assert event.before is not None and event.after is not None
    assert (event.before["expiry_days"], event.after["expiry_days"]) == (7, 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"required_approvals": 2}, "required_approvals"),  # demo has one lead
        ({"required_approvals": 0}, "required_approvals"),
        ({"expiry_days": 0}, "expiry_days"),
        ({"allowed_aliases": ["latest"]}, "allowed_aliases"),
        ({"allowed_aliases": []}, "allowed_aliases"),
        ({"approvers": ["omar"]}, "approvers"),
        ({"gate_metric": "accuracy"}, "gate_comparison"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(
    lin: User, omar: User, project: Project, body: dict[str, Any], field: str
) -> None:
    response = api_for(lin).patch(f"/api/v1/projects/{project.pk}/promotion-policy/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()


def test_pending_count_is_the_inbox_of_the_deciders(asked: int, lin: User, ada: User, vic: User, root: User) -> None:
    assert (pending_count(lin), pending_count(root), pending_count(ada), pending_count(vic)) == (1, 1, 0, 0)
    assert [r["id"] for r in api_for(lin).get(f"{PROMOTIONS}?awaiting=me").json()["results"]] == [asked]
