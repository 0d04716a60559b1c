"""Races. Two leads approving the same request at the same moment (quorum 1), duplicate
apply tasks, and two approved requests for the same alias: the alias moves exactly once
per request, in the order of approval, and the history stays a chain.

The threaded races need real row locks and concurrent writers, so they run on PostgreSQL
(DATABASE_URL=postgres://..., as CI does) and are skipped on SQLite. The ordering of the
queue itself is also checked without threads, on any database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from apps.accounts.models import User
from apps.projects.models import Project
from apps.registry import services
from apps.registry.mlflow import RegistryGateway
from apps.registry.models import AliasHistory, PromotionRequest, Source, Status
from apps.registry.tasks import apply_promotion
from tests.conftest import api_for
from tests.registry.conftest import Registered
from tests.registry.fakes import FakeRegistry

# Decided before any fixture (tests/conftest.py), so a skipped race does not start the MLflow
# server first; PLINTH_REQUIRE_POSTGRES=1 (CI) turns the skip into a failure.
needs_row_locks = pytest.mark.postgres(
    "needs real row locks (SELECT ... FOR UPDATE) and concurrent writers: run on PostgreSQL as CI does"
)


def ask(user: User, name: str, version: int) -> int:
    response = api_for(user).post(
        "/api/v1/promotions/",
        {"model": name, "version": version, "alias": "champion", "justification": "go"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return int(response.json()["id"])


def all_at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; return their results (or exceptions)."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            start.wait(timeout=30)
            results[i] = calls[i]()
        except BaseException as exc:  # reported by the test
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture
def counted_sets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every alias MLflow is asked to set, from any thread."""
    sets: list[tuple[Any, ...]] = []
    lock = threading.Lock()
    real = RegistryGateway.set_alias

    def set_alias(self: RegistryGateway, *args: Any) -> None:
        with lock:
            sets.append(args)
        real(self, *args)

    monkeypatch.setattr(RegistryGateway, "set_alias", set_alias)
    return sets


@needs_row_locks
@pytest.mark.mlflow
@pytest.mark.django_db(transaction=True)
def test_two_approvals_at_once_for_a_quorum_of_one_move_the_alias_once(
    ada: User,
    lin: User,
    lin2: User,
    project: Project,
    registered: Registered,
    counted_sets: list[tuple[Any, ...]],
    eager_tasks: None,
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.95}])
    pk = ask(ada, name, 2)
    url = f"/api/v1/promotions/{pk}/approve/"
    # Each approval that wins queues the apply task, which runs (eagerly) in its thread.
    answers = all_at_once(lambda: api_for(lin).post(url), lambda: api_for(lin2).post(url))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409], answers
    # Duplicate messages of the apply task, at the same time, change nothing more.
    assert sorted(all_at_once(lambda: apply_promotion(pk), lambda: apply_promotion(pk))) == [
        "already applied",
        "already applied",
    ]
    assert counted_sets == [(name, "champion", 2)]
    assert registered.alias(name, "champion") == 2
    assert AliasHistory.objects.filter(model__name=name).count() == 1
    assert PromotionRequest.objects.get(pk=pk).status == Status.APPLIED


@needs_row_locks
@pytest.mark.mlflow
@pytest.mark.django_db(transaction=True)
def test_duplicate_apply_tasks_racing_move_the_alias_once(
    ada: User, lin: User, project: Project, registered: Registered, counted_sets: list[tuple[Any, ...]]
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.9}])
    pk = ask(ada, name, 1)
    api_for(lin).post(f"/api/v1/promotions/{pk}/approve/")  # no worker: the tasks are run below
    outcomes = all_at_once(*[lambda: apply_promotion(pk) for _ in range(4)])
    assert outcomes.count("applied") == 1, outcomes
    assert counted_sets == [(name, "champion", 1)]
    assert AliasHistory.objects.filter(model__name=name).count() == 1


@needs_row_locks
@pytest.mark.mlflow
@pytest.mark.django_db(transaction=True)
def test_two_approved_requests_for_the_same_alias_apply_in_order(
    ada: User,
    bea: User,
    lin: User,
    project: Project,
    registered: Registered,
    counted_sets: list[tuple[Any, ...]],
    eager_tasks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = registered.model("demo/demo", [{"accuracy": 0.9}, {"accuracy": 0.95}, {"accuracy": 0.96}])
    first, second = ask(ada, name, 2), ask(bea, name, 3)
    # The approvals queue nothing here; the tasks are raced below (the queue sends the next).
    monkeypatch.setattr(services, "enqueue_on_commit", lambda task, *args: None)
    for pk in (first, second):
        assert api_for(lin).post(f"/api/v1/promotions/{pk}/approve/").json()["status"] == "approved"
    outcomes = all_at_once(lambda: apply_promotion(second), lambda: apply_promotion(first))
    assert "applied" in outcomes, outcomes
    done = {pk: PromotionRequest.objects.get(pk=pk) for pk in (first, second)}
    assert all(r.status == Status.APPLIED for r in done.values()), {pk: r.status for pk, r in done.items()}
    applied_at = [done[first].applied_at, done[second].applied_at]
    assert applied_at[0] is not None and applied_at[1] is not None and applied_at[0] < applied_at[1]
    assert [args[2] for args in counted_sets] == [2, 3]
    assert registered.alias(name, "champion") == 3
    rows = list(AliasHistory.objects.filter(model__name=name).order_by("valid_from", "id"))
    assert [(r.version, r.previous_version, r.request_id) for r in rows] == [(2, None, first), (3, 2, second)]
    assert rows[0].valid_to == rows[1].valid_from and rows[1].valid_to is None


@pytest.mark.django_db
def test_the_queue_of_an_alias_applies_in_the_order_of_approval(
    ada: User,
    bea: User,
    lin: User,
    project: Project,
    fake_registry: FakeRegistry,
    django_capture_on_commit_callbacks: Any,
    eager_tasks: None,
) -> None:
    """Without threads (any database): the later request's task waits for the earlier one,
    which sends it on when it is done."""
    first, second = ask(ada, "digits", 1), ask(bea, "digits", 2)
    with django_capture_on_commit_callbacks(execute=False):
        for pk in (first, second):
            api_for(lin).post(f"/api/v1/promotions/{pk}/approve/")
    assert apply_promotion(second) == f"waiting for request #{first}"
    assert PromotionRequest.objects.get(pk=second).status == Status.APPROVED
    with django_capture_on_commit_callbacks(execute=True):
        assert apply_promotion(first) == "applied"  # ... and its commit sends the second
    assert PromotionRequest.objects.get(pk=second).status == Status.APPLIED
    assert fake_registry.models["digits"]["aliases"] == {"champion": 2}
    rows = list(AliasHistory.objects.order_by("valid_from", "id"))
    assert [(r.version, r.previous_version, r.source) for r in rows] == [
        (1, None, Source.PLINTH),
        (2, 1, Source.PLINTH),
    ]


@pytest.mark.django_db
def test_a_failed_head_does_not_block_the_queue(
    ada: User, bea: User, lin: User, project: Project, fake_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = ask(ada, "digits", 1), ask(bea, "digits", 2)
    for pk in (first, second):
        api_for(lin).post(f"/api/v1/promotions/{pk}/approve/")
    del fake_registry.models["digits"]["versions"][1]  # deleted in MLflow after approval: refused for good
    assert apply_promotion(first) == "failed"
    assert "MLflow refused" in PromotionRequest.objects.get(pk=first).status_reason
    assert apply_promotion(second) == "applied"
