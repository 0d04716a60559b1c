"""The home page's attention list shows failed rollouts to the people who may change the
deployment (members, leads, platform admins), not to viewers or other teams."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import User
from apps.deployments.models import Deployment, DeploymentStatus, RevisionStatus
from tests.conftest import client_for
from tests.deployments.conftest import add_revision

pytestmark = pytest.mark.django_db


def attention(user: User) -> list[dict[str, str]]:
    response = client_for(user).get("/")
    assert response.status_code == 200
    return [item for item in response.context["attention"] if "/deployments/" in item["url"]]


def test_a_failed_rollout_and_a_failing_deployment_are_listed(
    ada: User, lin: User, vic: User, omar: User, root: User, deployment: Deployment
) -> None:
    add_revision(deployment, 1, RevisionStatus.SERVING, traffic=100)
    add_revision(deployment, 2, RevisionStatus.FAILED, reason="rolled back: canary 5xx rate 0.31 (31 of 100) > 0.05")
    old = add_revision(deployment, 3, RevisionStatus.FAILED, reason="pre-flight failed")
    old.created_at = timezone.now() - timedelta(days=2)
    old.save()
    for who in (ada, lin, root):
        (item,) = attention(who)
        assert item["level"] == "warning"
        assert "version 2" in item["text"] and "canary 5xx rate 0.31" in item["text"]
        assert item["url"] == f"/deployments/{deployment.pk}/"
    assert attention(vic) == []
    assert attention(omar) == []
    Deployment.objects.filter(pk=deployment.pk).update(
        status=DeploymentStatus.FAILED, status_reason="version 3 failed its pre-flight: no input example"
    )
    (item,) = attention(ada)
    assert item["level"] == "error"
    assert "is failing: version 3 failed its pre-flight" in item["text"]
