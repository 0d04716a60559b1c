"""Faults while applying, against the real `mlflow server`: MLflow down during the apply
(retried with backoff, then `failed` with the reason, alias unchanged), and MLflow gone
right after the alias moved (the move is undone: never a half-applied state)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.projects.models import Project
from apps.registry.mlflow import MlflowUnavailable, RegistryGateway
from apps.registry.models import AliasHistory, PromotionRequest, Source, Status
from apps.registry.tasks import apply_promotion, reconcile_aliases, reconcile_promotions
from tests.conftest import MLFLOW_DOWN, api_for
from tests.registry.conftest import Registered

pytestmark = [pytest.mark.mlflow, pytest.mark.django_db]


@pytest.fixture
def approved(ada: User, lin: User, project: Project, registered: Registered) -> tuple[str, int]:
    """A model whose champion is version 1 (moved by Plinth), and an approved request to
    move it to version 2 whose apply task has not run yet."""
    name = registered.model("demo/demo", [{"accuracy": 0.90}, {"accuracy": 0.95}])
    for version in (1, 2):
        response = api_for(ada).post(
            "/api/v1/promotions/",
            {"model": name, "version": version, "alias": "champion", "justification": "better"},
            format="json",
        )
        pk = response.json()["id"]
        assert api_for(lin).post(f"/api/v1/promotions/{pk}/approve/").json()["status"] == "approved"
        if version == 1:
            assert apply_promotion(pk) == "applied"
    assert registered.alias(name, "champion") == 1
    return name, pk


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each retry the task asks for runs at once, in this thread; the delays are recorded."""
    delays: list[int] = []

    def apply_async(args: tuple[int], countdown: int) -> None:
        delays.append(countdown)
        apply_promotion(*args)

    monkeypatch.setattr(apply_promotion, "apply_async", apply_async)
    return delays


def test_mlflow_down_during_apply_fails_after_retries_and_leaves_the_alias(
    approved: tuple[str, int],
    registered: Registered,
    retries: list[int],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    eager_tasks: None,
) -> None:
    name, pk = approved
    settings.MLFLOW_TRACKING_URI = MLFLOW_DOWN
    with django_capture_on_commit_callbacks(execute=True):
        apply_promotion(pk)
    request = PromotionRequest.objects.get(pk=pk)
    assert request.status == Status.FAILED
    assert "unreachable" in request.status_reason and "Gave up after 5 attempts" in request.status_reason
    assert request.apply_attempts == 5
    # Four waits, each jittered below its doubling ceiling: 5, 10, 20, 40 s.
    assert len(retries) == 4
    assert all(1 <= delay <= 5 * 2**n for n, delay in enumerate(retries)), retries
    assert registered.alias(name, "champion") == 1  # the real server never heard of it
    assert list(AliasHistory.objects.filter(model__name=name).values_list("version", flat=True)) == [1]
    assert AuditEvent.objects.filter(verb="promotion.failed", target_id=str(pk)).count() == 1
    failed = [m for m in mail.outbox if m.subject.endswith(f"request #{pk} failed")]
    assert [m.to for m in failed] == [["ada@example.test"]]
    assert "unreachable" in failed[0].body


def test_a_retry_that_finds_mlflow_back_applies(
    approved: tuple[str, int], registered: Registered, settings: Any, mlflow_up: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt meets MLflow down and asks for a retry in 5 s; once the backoff
    has passed, the reconciler sends it again (its message may be lost) and it applies."""
    name, pk = approved
    monkeypatch.setattr("apps.core.retry.jitter", lambda: 1.0)  # the top of the window: 5 s
    later: list[int] = []
    monkeypatch.setattr(apply_promotion, "apply_async", lambda args, countdown: later.append(countdown))
    settings.MLFLOW_TRACKING_URI = MLFLOW_DOWN
    assert apply_promotion(pk) == "retry"
    assert later == [5]
    request = PromotionRequest.objects.get(pk=pk)
    assert (request.status, request.lease_token, request.apply_attempts) == (Status.APPLYING, "", 1)
    assert "trying again in 5 s" in request.status_reason
    sent: list[int] = []
    monkeypatch.setattr(apply_promotion, "delay", lambda p: sent.append(p))
    assert reconcile_promotions()["sent"] == 0  # not before the backoff has passed
    PromotionRequest.objects.filter(pk=pk).update(next_attempt_at="2000-01-01T00:00:00Z")
    assert reconcile_promotions()["sent"] == 1
    assert sent == [pk]
    settings.MLFLOW_TRACKING_URI = mlflow_up
    assert apply_promotion(pk) == "applied"
    assert registered.alias(name, "champion") == 2


def test_mlflow_gone_right_after_the_move_is_undone(
    approved: tuple[str, int], registered: Registered, retries: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alias was set, then every read-back failed: the request fails, MLflow is left
    pointing at the new version for a moment, and the reconciler puts the old one back
    (recorded as a revert, not as a change outside Plinth)."""
    name, pk = approved
    real_get_alias = RegistryGateway.get_alias
    moved = {"yes": False}
    real_set_alias = RegistryGateway.set_alias

    def set_alias(self: RegistryGateway, *args: Any) -> None:
        real_set_alias(self, *args)
        moved["yes"] = True

    def get_alias(self: RegistryGateway, *args: Any) -> int | None:
        if moved["yes"]:
            raise MlflowUnavailable("MLflow stopped answering.")
        return real_get_alias(self, *args)

    monkeypatch.setattr(RegistryGateway, "set_alias", set_alias)
    monkeypatch.setattr(RegistryGateway, "get_alias", get_alias)
    apply_promotion(pk)
    request = PromotionRequest.objects.get(pk=pk)
    assert (request.status, request.revert_needed, request.previous_version) == (Status.FAILED, True, 1)
    assert registered.alias(name, "champion") == 2  # half-applied, for now

    monkeypatch.setattr(RegistryGateway, "set_alias", real_set_alias)
    monkeypatch.setattr(RegistryGateway, "get_alias", real_get_alias)
    reconcile_aliases()
    assert registered.alias(name, "champion") == 1
    assert not PromotionRequest.objects.get(pk=pk).revert_needed
    assert AuditEvent.objects.filter(verb="promotion.reverted", target_id=str(pk)).count() == 1
    rows = AliasHistory.objects.filter(model__name=name)
    assert [(r.version, r.source) for r in rows] == [(1, Source.PLINTH)]  # no drift recorded for our own undo


def test_the_reconciler_resends_an_approved_request_whose_message_was_lost(
    approved: tuple[str, int], registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pk = approved
    PromotionRequest.objects.filter(pk=pk).update(updated_at="2000-01-01T00:00:00Z")
    sent: list[int] = []
    monkeypatch.setattr(apply_promotion, "delay", lambda p: sent.append(p))
    assert reconcile_promotions()["sent"] == 1
    assert sent == [pk]
