"""Fixtures of the deployment tests: a fake serving backend in place of every real one, the
fake registry with model `digits` of demo/demo, and deployments made through the service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from portal.celery import app
from tests.deployments.fakes import FakeServing, install
from tests.registry.conftest import bea, eager_tasks, fake_registry, lin2  # noqa: F401  (fixtures)


@pytest.fixture
def fake_serving(monkeypatch: pytest.MonkeyPatch) -> FakeServing:
    """One FakeServing answers for every backend name (see tests/deployments/fakes.install)."""
    return install(monkeypatch)


@pytest.fixture
def no_reconcile(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The reconcile task is not run; the ids it was enqueued with are collected instead."""
    from apps.deployments import tasks

    enqueued: list[int] = []
    monkeypatch.setattr(tasks.reconcile_deployment, "delay", lambda pk, *a, **k: enqueued.append(pk))
    return enqueued


@pytest.fixture
def celery_eager() -> Iterator[None]:
    """`.delay()` runs the task at once, in this thread."""
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = before


@pytest.fixture
def digits(project: Any) -> Any:
    """Registered model `digits` of demo/demo (Plinth's mirror row; MLflow stays down)."""
    from apps.registry.models import RegisteredModel

    return RegisteredModel.objects.create(name="digits", project=project)


@pytest.fixture
def deployment(ada: Any, project: Any, digits: Any) -> Any:
    """demo/demo's deployment `digits-api` following digits@champion, made by ada."""
    from apps.deployments import services

    return services.create_deployment(ada, project, name="digits-api", model="digits")


def add_revision(deployment: Any, version: int, status: str, traffic: int = 0, **extra: Any) -> Any:
    """A revision row in the state a rollout would leave it (the next number)."""
    from apps.deployments.models import Revision

    number = (deployment.revisions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    return Revision.objects.create(
        deployment=deployment, number=number, version=version, status=status, traffic=traffic, **extra
    )
