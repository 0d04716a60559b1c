"""The rollout reconciler against the fake serving backend and the fake registry: the first
deploy, an alias move through a canary to 100 %, automatic rollback with the numbers, a
pre-flight failure that never gets traffic, a worker killed between steps, a crashed model
server restarted and counted, the manual rollback, MLflow down, deletion, and the hooks
from the registry (an applied promotion, an alias changed in MLflow)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import F

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.core.errors import Conflict
from apps.deployments import rollout
from apps.deployments.models import Deployment, DeploymentStatus, Revision, RevisionStatus, RolloutStep
from apps.deployments.tasks import reconcile_deployments
from apps.notifications.models import Notification
from apps.projects.models import Project
from apps.registry import drift
from apps.registry.models import RegisteredModel
from apps.registry.tasks import apply_promotion
from tests.conftest import api_for
from tests.deployments.fakes import FakeServing
from tests.registry.fakes import FakeRegistry

pytestmark = pytest.mark.django_db

EXAMPLE = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}


@pytest.fixture
def deployment(project: Project, ada: User, fake_registry: FakeRegistry, fake_serving: FakeServing) -> Deployment:
    """`digits-api` of demo/demo following digits@champion (version 1), a 10 % canary for
    0 minutes (the verdict comes on the pass after the canary starts), its own example."""
    fake_registry.set_alias("digits", "champion", 1)
    return Deployment.objects.create(
        project=project,
        name="digits-api",
        model_name="digits",
        alias="champion",
        backend="local",
        canary_percent=10,
        canary_minutes=0,
        input_example=EXAMPLE,
        created_by=ada,
    )


@pytest.fixture
def split_log(fake_serving: FakeServing, monkeypatch: pytest.MonkeyPatch) -> list[dict[int, int]]:
    """Every split the backend was given, in order."""
    seen: list[dict[int, int]] = []
    original = fake_serving.set_traffic

    def recording(deployment: Deployment, split: Any) -> None:
        original(deployment, split)
        seen.append(dict(split))

    monkeypatch.setattr(fake_serving, "set_traffic", recording)
    return seen


def run(deployment: Deployment) -> str:
    return rollout.reconcile(deployment.pk)


def revisions(deployment: Deployment) -> dict[int, tuple[int, str, int]]:
    """{number: (version, status, traffic)}."""
    return {r.number: (r.version, r.status, r.traffic) for r in Revision.objects.filter(deployment=deployment)}


def rev(deployment: Deployment, number: int) -> Revision:
    return Revision.objects.get(deployment=deployment, number=number)


def steps(deployment: Deployment) -> list[tuple[int | None, str]]:
    """The timeline, oldest first: (revision number, step)."""
    events = deployment.events.select_related("revision").order_by("at", "pk")
    return [(e.revision.number if e.revision else None, e.step) for e in events]


def status(deployment: Deployment) -> str:
    deployment.refresh_from_db()
    return deployment.status


def serve_first(deployment: Deployment) -> None:
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100)}


def move_alias(fake_registry: FakeRegistry, version: int) -> None:
    fake_registry.set_alias("digits", "champion", version)


# -- first deploy, canary, promotion ---------------------------------------------------------
def test_the_first_revision_passes_preflight_and_takes_all_the_traffic(
    deployment: Deployment, fake_serving: FakeServing
) -> None:
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100)}
    assert steps(deployment) == [(1, RolloutStep.STARTED), (1, RolloutStep.PREFLIGHT_PASSED), (1, RolloutStep.PROMOTED)]
    assert status(deployment) == DeploymentStatus.SERVING
    first = rev(deployment, 1)
    assert fake_serving.traffic[deployment.pk] == {first.pk: 100}
    assert fake_serving.requests[first.pk][0].status == 200  # the pre-flight prediction
    assert first.serving_at is not None and first.ready_at is not None
    verbs = list(AuditEvent.objects.filter(target_id=str(deployment.pk)).values_list("verb", flat=True))
    assert sorted(verbs) == ["deployment.preflight_passed", "deployment.promoted", "deployment.rollout_started"]
    assert run(deployment) == "nothing to do"  # settled: a second pass changes nothing
    assert len(steps(deployment)) == 3


def test_an_alias_move_rolls_out_through_a_canary_then_promotes_and_keeps_the_old_one_warm(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, settings: Any
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 90), 2: (2, RevisionStatus.SERVING, 10)}
    assert rev(deployment, 2).is_canary
    assert status(deployment) == DeploymentStatus.ROLLING_OUT
    canary_audit = AuditEvent.objects.get(verb="deployment.canary_started", target_id=str(deployment.pk))
    assert canary_audit.actor is None  # by rule
    after = canary_audit.after or {}
    assert (after["revision"], after["share"], after["stable"]) == (2, 10, 1)
    passed = AuditEvent.objects.filter(verb="deployment.preflight_passed", target_id=str(deployment.pk))
    assert sorted((e.after or {})["revision"] for e in passed) == [1, 2]
    one, two = rev(deployment, 1), rev(deployment, 2)
    assert fake_serving.traffic[deployment.pk] == {one.pk: 90, two.pk: 10}
    fake_serving.feed(two, 200, 12.0, count=20)
    fake_serving.feed(one, 200, 10.0, count=180)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.READY, 0), 2: (2, RevisionStatus.SERVING, 100)}
    assert status(deployment) == DeploymentStatus.SERVING
    assert fake_serving.traffic[deployment.pk] == {two.pk: 100}
    promoted = deployment.events.filter(step=RolloutStep.PROMOTED, revision=two).get()
    assert "canary 5xx rate 0.00 (0 of 20)" in promoted.message  # the pre-flight came before the canary
    assert fake_serving.servers[one.pk].state == "up"  # warm for the rollback window
    run(deployment)
    assert rev(deployment, 1).status == RevisionStatus.READY  # still inside the window
    settings.PLINTH_ROLLBACK_WINDOW_SECONDS = 0
    run(deployment)
    assert revisions(deployment)[1] == (1, RevisionStatus.RETIRED, 0)
    assert fake_serving.servers[one.pk].state == "gone"
    assert rev(deployment, 1).retired_at is not None
    assert steps(deployment)[-1] == (1, RolloutStep.RETIRED)


def test_a_canary_without_requests_is_promoted_and_says_so(deployment: Deployment, fake_registry: FakeRegistry) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)  # the pre-flight's own request predates the canary: it does not count
    run(deployment)
    assert revisions(deployment)[2] == (2, RevisionStatus.SERVING, 100)
    message = deployment.events.get(step=RolloutStep.PROMOTED, revision=rev(deployment, 2)).message
    assert "no requests reached the canary" in message


def test_the_canary_waits_its_minutes(deployment: Deployment, fake_registry: FakeRegistry) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(canary_minutes=5)
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    run(deployment)
    assert revisions(deployment)[2] == (2, RevisionStatus.SERVING, 10)
    Revision.objects.filter(deployment=deployment, number=2).update(
        canary_started_at=F("canary_started_at") - timedelta(minutes=6)
    )
    run(deployment)
    assert revisions(deployment)[2] == (2, RevisionStatus.SERVING, 100)


def test_a_zero_percent_canary_takes_all_the_traffic_after_preflight(
    deployment: Deployment, fake_registry: FakeRegistry, split_log: list[dict[int, int]]
) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(canary_percent=0)
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.READY, 0), 2: (2, RevisionStatus.SERVING, 100)}
    assert split_log[-1] == {rev(deployment, 2).pk: 100}


def test_a_pinned_deployment_serves_its_version_whatever_the_alias(
    deployment: Deployment, fake_registry: FakeRegistry
) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(pinned_version=2)
    run(deployment)
    assert revisions(deployment) == {1: (2, RevisionStatus.SERVING, 100)}
    move_alias(fake_registry, 1)
    run(deployment)
    assert revisions(deployment) == {1: (2, RevisionStatus.SERVING, 100)}


# -- automatic rollback -------------------------------------------------------------------------
def test_a_canary_answering_5xx_is_rolled_back_with_the_numbers_and_the_team_is_told(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, lin: User
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    one, two = rev(deployment, 1), rev(deployment, 2)
    fake_serving.requests.clear()  # only what the gateway saw during the canary counts here
    fake_serving.feed(two, 500, 5.0, count=31)
    fake_serving.feed(two, 200, 5.0, count=69)
    fake_serving.feed(one, 200, 5.0, count=900)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100), 2: (2, RevisionStatus.FAILED, 0)}
    reason = rev(deployment, 2).reason
    assert "canary 5xx rate 0.31 (31 of 100) > limit 0.05; stable 0.00 (0 of 900)" in reason
    assert fake_serving.traffic[deployment.pk] == {one.pk: 100}
    assert fake_serving.servers[two.pk].state == "gone"
    assert steps(deployment)[-1] == (2, RolloutStep.ROLLED_BACK)
    assert status(deployment) == DeploymentStatus.SERVING
    audit = AuditEvent.objects.get(verb="deployment.rolled_back", target_id=str(deployment.pk))
    assert audit.after is not None and "0.31" in audit.after["reason"]
    note = Notification.objects.get(verb="deployment.rolled_back")
    assert "0.31 (31 of 100)" in note.body and note.payload["revision"]["version"] == 2
    assert sorted(note.deliveries.values_list("recipient", flat=True)) == ["ada@example.test", "lin@example.test"]
    for _ in range(2):  # the alias still names version 2: it is not tried again
        run(deployment)
    assert set(revisions(deployment)) == {1, 2}


def test_a_slow_canary_is_rolled_back_on_its_p95(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    fake_serving.requests.clear()
    fake_serving.feed(rev(deployment, 2), 200, 1500.0, count=40)
    fake_serving.feed(rev(deployment, 1), 200, 20.0, count=400)
    run(deployment)
    assert rev(deployment, 2).status == RevisionStatus.FAILED
    assert "canary p95 1500 ms > limit 1000 ms; stable 20 ms" in rev(deployment, 2).reason


# -- pre-flight --------------------------------------------------------------------------------
def test_a_version_that_cannot_load_fails_preflight_and_never_gets_traffic(
    deployment: Deployment,
    fake_serving: FakeServing,
    fake_registry: FakeRegistry,
    split_log: list[dict[int, int]],
) -> None:
    serve_first(deployment)
    fake_serving.fail_versions[2] = "ModuleNotFoundError: No module named 'broken_flavor'"
    move_alias(fake_registry, 2)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100), 2: (2, RevisionStatus.FAILED, 0)}
    two = rev(deployment, 2)
    assert "pre-flight failed: ModuleNotFoundError: No module named 'broken_flavor'" in two.reason
    assert "starting model version 2" in two.reason  # the log's tail
    assert all(two.pk not in split for split in split_log)
    assert two.pk not in fake_serving.requests
    assert fake_serving.servers[two.pk].state == "gone"
    assert (2, RolloutStep.PREFLIGHT_FAILED) in steps(deployment)
    assert status(deployment) == DeploymentStatus.SERVING
    assert Notification.objects.filter(verb="deployment.preflight_failed").count() == 1
    run(deployment)
    assert set(revisions(deployment)) == {1, 2}


def test_a_version_answering_5xx_on_its_example_fails_preflight(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, split_log: list[dict[int, int]]
) -> None:
    serve_first(deployment)
    fake_serving.answers[2] = (500, b'{"error_code": "INTERNAL_ERROR", "message": "boom"}')
    move_alias(fake_registry, 2)
    run(deployment)
    two = rev(deployment, 2)
    assert two.status == RevisionStatus.FAILED
    assert "the model answered 500 on its input example" in two.reason and "boom" in two.reason
    assert all(two.pk not in split for split in split_log)


def test_a_first_revision_that_fails_preflight_fails_the_deployment(
    deployment: Deployment, fake_serving: FakeServing
) -> None:
    fake_serving.fail_versions[1] = "the model does not load"
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.FAILED, 0)}
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.FAILED
    assert "the model does not load" in deployment.status_reason


def test_a_model_server_that_never_comes_up_fails_after_the_deadline(
    deployment: Deployment, fake_serving: FakeServing, settings: Any
) -> None:
    fake_serving.slow_versions.add(1)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.STARTING, 0)}
    settings.PLINTH_PREFLIGHT_TIMEOUT_SECONDS = 0
    run(deployment)
    assert rev(deployment, 1).status == RevisionStatus.FAILED
    assert "did not come up within 0 s" in rev(deployment, 1).reason


# -- crash safety ------------------------------------------------------------------------------
def crash_once(monkeypatch: pytest.MonkeyPatch, fake: FakeServing, method: str) -> list[int]:
    """The next call of `fake.<method>` raises as a killed worker would stop; later calls work."""
    calls: list[int] = []
    original: Callable[..., Any] = getattr(fake, method)

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt(f"worker killed in {method}")
        return original(*args, **kwargs)

    monkeypatch.setattr(fake, method, dying)
    return calls


def test_a_worker_killed_after_creating_the_revision_starts_it_on_the_next_pass(
    deployment: Deployment, fake_serving: FakeServing, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_once(monkeypatch, fake_serving, "start")
    with pytest.raises(KeyboardInterrupt):
        run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.STARTING, 0)}
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100)}
    assert fake_serving.servers[rev(deployment, 1).pk].starts == 1


def test_a_worker_killed_before_applying_the_canary_split_applies_it_on_the_next_pass(
    deployment: Deployment,
    fake_serving: FakeServing,
    fake_registry: FakeRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(canary_minutes=60)
    serve_first(deployment)
    move_alias(fake_registry, 2)
    crash_once(monkeypatch, fake_serving, "set_traffic")
    with pytest.raises(KeyboardInterrupt):
        run(deployment)
    one, two = rev(deployment, 1), rev(deployment, 2)
    assert (one.traffic, two.traffic) == (90, 10)  # the intent was committed
    assert fake_serving.traffic[deployment.pk] == {one.pk: 100}  # the backend never heard it
    run(deployment)
    assert fake_serving.traffic[deployment.pk] == {one.pk: 90, two.pk: 10}
    Revision.objects.filter(pk=two.pk).update(canary_started_at=F("canary_started_at") - timedelta(minutes=61))
    run(deployment)
    assert fake_serving.traffic[deployment.pk] == {two.pk: 100}
    assert steps(deployment).count((2, RolloutStep.PROMOTED)) == 1


def test_a_worker_killed_before_stopping_a_rolled_back_canary_stops_it_and_never_routes_to_it(
    deployment: Deployment,
    fake_serving: FakeServing,
    fake_registry: FakeRegistry,
    monkeypatch: pytest.MonkeyPatch,
    split_log: list[dict[int, int]],
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    two = rev(deployment, 2)
    fake_serving.feed(two, 500, 5.0, count=50)
    crash_once(monkeypatch, fake_serving, "stop")
    with pytest.raises(KeyboardInterrupt):
        run(deployment)
    assert rev(deployment, 2).status == RevisionStatus.FAILED and rev(deployment, 2).traffic == 0
    assert fake_serving.servers[two.pk].state == "up"  # still running: the stop never happened
    run(deployment)
    assert fake_serving.servers[two.pk].state == "gone"
    assert rev(deployment, 2).retired_at is not None
    after_failure = split_log[split_log.index({rev(deployment, 1).pk: 90, two.pk: 10}) + 1 :]
    assert after_failure and all(two.pk not in split for split in after_failure)


def test_two_passes_in_a_row_decide_each_step_once(
    deployment: Deployment, fake_registry: FakeRegistry, fake_serving: FakeServing
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    for _ in range(4):
        run(deployment)
    assert [s for s in steps(deployment) if s[0] == 2] == [
        (2, RolloutStep.STARTED),
        (2, RolloutStep.PREFLIGHT_PASSED),
        (2, RolloutStep.CANARY),
        (2, RolloutStep.PROMOTED),
    ]


# -- crashed model servers ------------------------------------------------------------------------
def test_a_crashed_model_server_is_restarted_and_counted(deployment: Deployment, fake_serving: FakeServing) -> None:
    serve_first(deployment)
    one = rev(deployment, 1)
    fake_serving.crash(one)
    run(deployment)
    one.refresh_from_db()
    assert one.restarts == 1
    assert fake_serving.servers[one.pk].state == "up" and fake_serving.servers[one.pk].starts == 2
    assert steps(deployment)[-1] == (1, RolloutStep.RESTARTED)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100)}  # nowhere else to send it
    run(deployment)
    assert rev(deployment, 1).restarts == 1


def test_a_restart_that_takes_a_while_is_counted_once(deployment: Deployment, fake_serving: FakeServing) -> None:
    serve_first(deployment)
    one = rev(deployment, 1)
    fake_serving.slow_versions.add(1)  # the model takes a while to load again
    fake_serving.crash(one)
    for _ in range(3):
        run(deployment)
    assert fake_serving.servers[one.pk].state == "starting"
    assert rev(deployment, 1).restarts == 1
    assert [step for _, step in steps(deployment)].count(RolloutStep.RESTARTED) == 1


def test_a_crashed_stable_gives_its_share_to_the_canary_until_it_is_back(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry
) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(canary_minutes=60)
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    one, two = rev(deployment, 1), rev(deployment, 2)
    fake_serving.crash(one)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 0), 2: (2, RevisionStatus.SERVING, 100)}
    assert fake_serving.traffic[deployment.pk] == {one.pk: 0, two.pk: 100}
    run(deployment)  # back up: the canary split again
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 90), 2: (2, RevisionStatus.SERVING, 10)}
    assert rev(deployment, 1).restarts == 1


# -- manual rollback ---------------------------------------------------------------------------
def promoted_twice(deployment: Deployment, fake_registry: FakeRegistry) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    run(deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.READY, 0), 2: (2, RevisionStatus.SERVING, 100)}


def test_a_manual_rollback_to_a_warm_revision_is_immediate_and_sticks(
    deployment: Deployment, fake_registry: FakeRegistry, fake_serving: FakeServing, lin: User
) -> None:
    promoted_twice(deployment, fake_registry)
    served = rollout.rollback(lin, deployment)
    assert served.number == 1
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100), 2: (2, RevisionStatus.RETIRED, 0)}
    assert "rolled back by lin" in rev(deployment, 2).reason
    event = deployment.events.get(step=RolloutStep.ROLLED_BACK)
    assert event.actor == lin and "lin rolled back to revision 1" in event.message
    audit = AuditEvent.objects.get(verb="deployment.rollback")
    assert audit.actor == lin and audit.after is not None and audit.after["version"] == 1
    for _ in range(2):  # the alias still says 2: the rollback is not undone by the next passes
        run(deployment)
    assert set(revisions(deployment)) == {1, 2}
    assert fake_serving.traffic[deployment.pk] == {rev(deployment, 1).pk: 100}
    assert fake_serving.servers[rev(deployment, 2).pk].state == "gone"


def test_a_manual_rollback_to_a_retired_version_starts_it_and_switches_after_preflight(
    deployment: Deployment, fake_registry: FakeRegistry, fake_serving: FakeServing, lin: User, settings: Any
) -> None:
    promoted_twice(deployment, fake_registry)
    settings.PLINTH_ROLLBACK_WINDOW_SECONDS = 0
    run(deployment)
    assert rev(deployment, 1).status == RevisionStatus.RETIRED
    made = rollout.rollback(lin, deployment)
    assert (made.number, made.version, made.status, made.created_by) == (3, 1, RevisionStatus.STARTING, lin)
    assert revisions(deployment)[2] == (2, RevisionStatus.SERVING, 100)  # serves until the new one is ready
    with pytest.raises(Conflict, match="already starting"):
        rollout.rollback(lin, deployment)
    run(deployment)
    assert revisions(deployment) == {
        1: (1, RevisionStatus.RETIRED, 0),
        2: (2, RevisionStatus.RETIRED, 0),
        3: (1, RevisionStatus.SERVING, 100),
    }
    assert not any(step == RolloutStep.CANARY for number, step in steps(deployment) if number == 3)
    assert fake_serving.traffic[deployment.pk] == {rev(deployment, 3).pk: 100}
    run(deployment)
    assert set(revisions(deployment)) == {1, 2, 3}


def test_a_manual_rollback_during_a_canary_ends_the_canary(
    deployment: Deployment, fake_registry: FakeRegistry, lin: User
) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(canary_minutes=60)
    serve_first(deployment)
    move_alias(fake_registry, 2)
    run(deployment)
    served = rollout.rollback(lin, deployment)
    assert served.number == 1
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100), 2: (2, RevisionStatus.RETIRED, 0)}


def test_a_rollback_with_nothing_to_go_back_to_is_a_conflict(deployment: Deployment, lin: User) -> None:
    with pytest.raises(Conflict, match="Nothing serves yet"):
        rollout.rollback(lin, deployment)
    serve_first(deployment)
    with pytest.raises(Conflict, match="nothing to go back to"):
        rollout.rollback(lin, deployment)
    assert revisions(deployment) == {1: (1, RevisionStatus.SERVING, 100)}


def test_the_rollback_endpoint_answers_409_when_there_is_nothing_to_go_back_to(
    deployment: Deployment, lin: User, no_reconcile: list[int]
) -> None:
    serve_first(deployment)
    response = api_for(lin).post(f"/api/v1/deployments/{deployment.pk}/rollback/")
    assert response.status_code == 409
    assert "nothing to go back to" in response.json()["detail"]


# -- MLflow down, backend down, deletion ----------------------------------------------------------
def test_mlflow_down_changes_nothing(
    deployment: Deployment, fake_registry: FakeRegistry, fake_serving: FakeServing
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    fake_registry.down = True
    before = (revisions(deployment), steps(deployment), status(deployment))
    run(deployment)
    assert (revisions(deployment), steps(deployment), status(deployment)) == before
    fake_registry.down = False
    run(deployment)
    assert rev(deployment, 2).is_canary


def test_a_new_deployment_waits_for_mlflow(deployment: Deployment, fake_registry: FakeRegistry) -> None:
    fake_registry.down = True
    run(deployment)
    deployment.refresh_from_db()
    assert revisions(deployment) == {}
    assert (deployment.status, deployment.status_reason) == (
        DeploymentStatus.STARTING,
        "MLflow is unreachable: the version to serve is not known yet.",
    )


def test_an_unset_alias_starts_nothing_and_says_why(deployment: Deployment, fake_registry: FakeRegistry) -> None:
    fake_registry.delete_alias("digits", "champion")
    run(deployment)
    deployment.refresh_from_db()
    assert revisions(deployment) == {}
    assert deployment.status_reason == "champion does not point at any version of digits in MLflow."


def test_an_unreachable_serving_backend_ends_the_pass_without_a_change(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry
) -> None:
    serve_first(deployment)
    move_alias(fake_registry, 2)
    fake_serving.down = True
    assert "serving backend unavailable" in run(deployment)
    assert revisions(deployment)[1] == (1, RevisionStatus.SERVING, 100)
    fake_serving.down = False
    run(deployment)
    assert rev(deployment, 2).is_canary


def test_a_deployment_being_deleted_is_removed_from_the_backend_then_from_the_database(
    deployment: Deployment, fake_serving: FakeServing
) -> None:
    serve_first(deployment)
    server = rev(deployment, 1).pk
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.DELETING)
    fake_serving.down = True
    run(deployment)
    assert Deployment.objects.filter(pk=deployment.pk).exists()  # waits for the backend
    fake_serving.down = False
    assert run(deployment) == "deleted"
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    assert deployment.pk in fake_serving.deleted and fake_serving.servers[server].state == "gone"


def test_the_periodic_pass_reconciles_every_deployment(
    deployment: Deployment, project: Project, ada: User, settings: Any
) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["deployments-reconcile"]["task"] == (
        "apps.deployments.tasks.reconcile_deployments"
    )
    second = Deployment.objects.create(
        project=project,
        name="digits-two",
        model_name="digits",
        backend="local",
        input_example=EXAMPLE,
        created_by=ada,
    )
    assert reconcile_deployments() == {"deployments": 2, "failed": 0}
    assert status(deployment) == status(second) == DeploymentStatus.SERVING


# -- hooks from the registry -------------------------------------------------------------------
def test_an_applied_promotion_sends_the_reconcile_of_the_deployments_following_the_alias(
    deployment: Deployment,
    project: Project,
    ada: User,
    lin: User,
    no_reconcile: list[int],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("apps.registry.tasks.apply_promotion.delay", lambda pk: None)
    monkeypatch.setattr("apps.notifications.tasks.deliver.delay", lambda pk: None)
    Deployment.objects.create(
        project=project, name="pinned", model_name="digits", pinned_version=1, backend="local", created_by=ada
    )
    Deployment.objects.create(
        project=project, name="staging", model_name="digits", alias="staging", backend="local", created_by=ada
    )
    response = api_for(ada).post(
        "/api/v1/promotions/",
        {"model": "digits", "version": 2, "alias": "champion", "justification": "better"},
        format="json",
    )
    pk = response.json()["id"]
    assert api_for(lin).post(f"/api/v1/promotions/{pk}/approve/").json()["status"] == "approved"
    no_reconcile.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert apply_promotion(pk) == "applied"
    assert no_reconcile == [deployment.pk]


def test_an_alias_changed_in_mlflow_sends_the_reconcile_of_its_followers(
    deployment: Deployment, project: Project, no_reconcile: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    model = RegisteredModel.objects.create(name="digits", project=project)
    with django_capture_on_commit_callbacks(execute=True):
        drift.sync_aliases(model, {"champion": 2})
    assert no_reconcile == [deployment.pk]


def test_the_task_sends_itself_again_while_a_rollout_is_in_flight(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.deployments.tasks import reconcile_deployment

    later: list[tuple[Any, float]] = []
    monkeypatch.setattr(
        reconcile_deployment, "apply_async", lambda args, countdown, expires: later.append((args, countdown))
    )
    Deployment.objects.filter(pk=deployment.pk).update(canary_minutes=2)
    fake_serving.slow_versions.add(1)
    reconcile_deployment(deployment.pk)
    assert later == [((deployment.pk,), rollout.STARTING_POLL_SECONDS)]
    fake_serving.slow_versions.clear()
    fake_serving.stop(rev(deployment, 1))  # comes back up on the next start
    reconcile_deployment(deployment.pk)
    assert len(later) == 1  # serving, nothing in flight: beat's pass is enough
    move_alias(fake_registry, 2)
    reconcile_deployment(deployment.pk)
    assert rev(deployment, 2).is_canary
    assert 110 <= later[-1][1] <= 121  # at the end of the 2-minute canary


def test_a_failed_preflight_is_tried_again_once_a_person_changes_the_deployment(
    deployment: Deployment, fake_serving: FakeServing, fake_registry: FakeRegistry, ada: User
) -> None:
    from apps.deployments import services

    serve_first(deployment)
    fake_serving.answers[2] = (400, b'{"message": "missing inputs: pixel_0_0"}')
    move_alias(fake_registry, 2)
    run(deployment)
    assert rev(deployment, 2).status == RevisionStatus.FAILED
    run(deployment)
    assert set(revisions(deployment)) == {1, 2}  # not retried on its own
    del fake_serving.answers[2]  # the model's environment was repaired, say
    services.update_deployment(ada, deployment, max_p95_ms=2000)
    run(deployment)
    assert revisions(deployment)[3] == (2, RevisionStatus.SERVING, 10)


@pytest.mark.django_db(transaction=True)
def test_two_passes_at_once_start_one_revision_and_record_each_step_once(
    deployment: Deployment, fake_registry: FakeRegistry, fake_serving: FakeServing
) -> None:
    import threading

    from django.db import connection

    def passes(barrier: threading.Barrier, errors: list[BaseException]) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                run(deployment)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    for version in (1, 2):
        move_alias(fake_registry, version)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=passes, args=(barrier, errors)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    assert revisions(deployment) == {1: (1, RevisionStatus.READY, 0), 2: (2, RevisionStatus.SERVING, 100)}
    for number in (1, 2):
        mine = [step for n, step in steps(deployment) if n == number]
        assert len(mine) == len(set(mine)), mine
    assert fake_serving.servers[rev(deployment, 2).pk].starts == 1


def test_a_new_revision_records_the_run_behind_its_version(deployment: Deployment, fake_registry: FakeRegistry) -> None:
    run(deployment)
    found = fake_registry.get_model_version("digits", 1)
    assert found is not None
    assert rev(deployment, 1).run_id == found["run_id"]
