"""The deployment services beyond what the API tests show: validation of every option (one
message per bad field, nothing half-applied), alias and version following or pinning, the
right to change, and changes refused while a deployment is being deleted."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.deployments import services
from apps.deployments.models import Deployment, ServingKey
from apps.projects.models import Project
from apps.registry.models import RegisteredModel

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"input_example": {"inputs": [1], "instances": [1]}}, "input_example"),
        ({"input_example": "[1, 2]"}, "input_example"),
        ({"input_example": {"inputs": [float("nan")]}}, "input_example"),
        ({"input_example": {"inputs": ["x" * 70_000]}}, "input_example"),
        ({"input_example": {"inputs": ["a\x00b"]}}, "input_example"),
        ({"resources": {"cpu": "lots"}}, "resources"),
        ({"resources": {"memory": "2 GB"}}, "resources"),
        ({"canary_percent": True}, "canary_percent"),
        ({"canary_minutes": float("inf")}, "canary_minutes"),
        ({"max_error_rate": "nan"}, "max_error_rate"),
        ({"capture_samples": "yes"}, "capture_samples"),
        ({"version": 0}, "version"),
        ({"name": "renamed"}, "name"),
        ({"max_replicas": 0}, "max_replicas"),
    ],
)
def test_a_bad_option_is_refused_and_nothing_changes(
    ada: User, deployment: Deployment, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        services.update_deployment(ada, deployment, **changes)
    assert field in refused.value.fields
    fresh = Deployment.objects.get(pk=deployment.pk)
    assert services.as_audit(fresh) == services.as_audit(deployment)
    assert not AuditEvent.objects.filter(verb="deployment.update").exists()


def test_every_bad_field_is_named_at_once(ada: User, deployment: Deployment) -> None:
    with pytest.raises(InvalidInput) as refused:
        services.update_deployment(ada, deployment, canary_percent=500, max_p95_ms=0, alias="latest")
    assert set(refused.value.fields) == {"canary_percent", "max_p95_ms", "alias"}


def test_pinning_keeps_the_alias_for_drift_and_unpinning_follows_it_again(
    ada: User, deployment: Deployment, fake_registry: Any
) -> None:
    pinned = services.update_deployment(ada, deployment, version=2)
    assert (pinned.alias, pinned.pinned_version) == ("champion", 2)
    unpinned = services.update_deployment(ada, pinned, version=None)
    assert (unpinned.alias, unpinned.pinned_version) == ("champion", None)
    services.update_deployment(ada, unpinned, version=1)
    followed = services.update_deployment(ada, unpinned, alias="challenger")
    assert (followed.alias, followed.pinned_version) == ("challenger", None)


def test_nothing_changed_writes_no_event(ada: User, deployment: Deployment) -> None:
    services.update_deployment(ada, deployment, canary_percent=deployment.canary_percent)
    assert not AuditEvent.objects.filter(verb="deployment.update").exists()


def test_viewers_and_outsiders_change_nothing(
    vic: User, omar: User, project: Project, digits: RegisteredModel, deployment: Deployment
) -> None:
    for who in (vic, omar):
        with pytest.raises(NotAllowed):
            services.create_deployment(who, project, name="other", model="digits")
        with pytest.raises(NotAllowed):
            services.update_deployment(who, deployment, canary_percent=50)
        with pytest.raises(NotAllowed):
            services.create_serving_key(who, deployment, "k")
    assert Deployment.objects.count() == 1 and not ServingKey.objects.exists()


def test_a_deployment_being_deleted_takes_no_more_changes(ada: User, deployment: Deployment) -> None:
    services.delete_deployment(ada, deployment)
    with pytest.raises(Conflict):
        services.update_deployment(ada, deployment, canary_percent=50)
    with pytest.raises(Conflict):
        services.create_serving_key(ada, deployment, "late")
    with pytest.raises(Conflict):
        services.rollback_deployment(ada, deployment)


def test_a_serving_key_is_stored_as_a_digest_and_revoked_once(ada: User, deployment: Deployment) -> None:
    key, secret = services.create_serving_key(ada, deployment, " batch ")
    assert key.name == "batch"
    assert secret not in (key.digest, key.prefix) and secret.startswith(key.prefix)
    services.revoke_serving_key(ada, key)
    services.revoke_serving_key(ada, key)
    assert AuditEvent.objects.filter(verb="deployment.key_revoke").count() == 1
    with pytest.raises(InvalidInput):
        services.create_serving_key(ada, deployment, "batch")  # revoked keys keep their names
    with pytest.raises(InvalidInput):
        services.create_serving_key(ada, deployment, "")


def test_replacing_the_input_example_saves_it_and_audits_a_summary(ada: User, deployment: Deployment) -> None:
    first = {"inputs": [[1.0, 2.0]]}
    second = {"inputs": [[3.0, 4.0]]}
    services.update_deployment(ada, deployment, input_example=first)
    services.update_deployment(ada, Deployment.objects.get(pk=deployment.pk), input_example=second)
    assert Deployment.objects.get(pk=deployment.pk).input_example == second
    events = list(AuditEvent.objects.filter(verb="deployment.update").order_by("pk"))
    assert len(events) == 2
    before, after = events[-1].before, events[-1].after
    assert before is not None and after is not None
    assert before["input_example"] == services.example_summary(first)
    assert after["input_example"] == services.example_summary(second)
    assert before["input_example"] != after["input_example"]
    # Clearing it goes back to the model's own example.
    services.update_deployment(ada, Deployment.objects.get(pk=deployment.pk), input_example=None)
    assert Deployment.objects.get(pk=deployment.pk).input_example is None


def test_a_key_name_with_a_nul_is_refused_and_a_key_gone_meanwhile_is_a_conflict(
    ada: User, deployment: Deployment
) -> None:
    with pytest.raises(InvalidInput) as refused:
        services.create_serving_key(ada, deployment, "a\x00b")
    assert "name" in refused.value.fields
    key, _ = services.create_serving_key(ada, deployment, "batch")
    ServingKey.objects.filter(pk=key.pk).delete()
    with pytest.raises(Conflict):
        services.revoke_serving_key(ada, key)
